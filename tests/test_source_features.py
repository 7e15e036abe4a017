"""The cached penultimate features and logits of a frozen source (``sskt.sources.features``): what they hold, what
keys them, and that a damaged cache file is recomputed rather than trusted."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sskt.config import SourceConfig
from sskt.data import build_dataset, eval_batches
from sskt.data.datasets import SubsetImageSet
from sskt.sources import build_source, features

INDICES = torch.tensor([3, 1, 40, 7, 599, 100])


@pytest.fixture(scope="module")
def spec(small_fmnist: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a DatasetSpec
    from conftest import make_tiny_cfg

    return build_dataset(make_tiny_cfg(small_fmnist, tmp_path_factory.mktemp("run")).data)


def _source(spec, size: int = 32):  # noqa: ANN001, ANN202
    return build_source(SourceConfig(name="efficientnet_lite0.imagenet", input_size=size), spec.mean, spec.std)


def test_features_are_the_classifier_input_and_logits_the_source_output(spec, tmp_path: Path) -> None:  # noqa: ANN001
    source = _source(spec)
    got = features.source_features(source, spec, INDICES, tmp_path, batch_size=4, device="cpu", show=False)
    assert got.indices.tolist() == sorted(INDICES.tolist()) and got.features.shape == (6, 1280)
    head = features.last_linear(source.net, "source")
    assert torch.allclose(got.features @ head.weight.T + head.bias, got.logits, atol=1e-4)
    images, _ = next(eval_batches(SubsetImageSet(spec.train, got.indices), spec, 6))
    assert torch.allclose(source(images), got.logits, atol=1e-4)
    assert not source.net._forward_hooks and not head._forward_hooks  # the hook is gone
    feats, logits = got.rows(torch.tensor([100, 3]))
    assert torch.equal(feats, got.features[[4, 1]]) and torch.equal(logits, got.logits[[4, 1]])


def test_the_cache_is_keyed_by_input_size_and_indices_and_survives_a_damaged_file(
    spec,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = features.extract
    monkeypatch.setattr(
        features, "extract", lambda s, sp, idx, *a, **k: calls.append(len(idx)) or real(s, sp, idx, *a, **k)
    )
    run = lambda size, idx: features.source_features(_source(spec, size), spec, idx, tmp_path, 8, "cpu", False)  # noqa: E731
    first = run(32, INDICES)
    assert run(32, INDICES.flip(0)).cached and len(calls) == 1  # same set of images, any order
    assert not run(48, INDICES).cached and not run(32, INDICES[:3]).cached and len(calls) == 3
    path = features.feature_path(tmp_path, features.feature_key(_source(spec), spec, first.indices))
    path.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="unreadable cached features"):
        again = run(32, INDICES)
    assert not again.cached and torch.allclose(again.logits, first.logits) and len(calls) == 4
    assert run(32, INDICES).cached
