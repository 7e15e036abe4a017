"""The trained-network boundary (``sskt.trained``): what a run ships, how it is read back, and what it refuses."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sskt.config import HeadConfig, ModelConfig, SourceConfig, TrainConfig
from sskt.errors import UserError
from sskt.methods import METHODS
from sskt.models import build_target
from sskt.rundir import RunDir
from sskt.sources.probe import PROBE
from sskt.trained import FORMAT, ModelCard, legacy_fields, load_trained, read_card, save_trained, write_card


def _card(**changes: object) -> ModelCard:
    card = ModelCard(
        architecture="resnet20", task="single_label", num_classes=3, class_names=["a", "b", "c"],
        mean=[0.5] * 3, std=[0.25] * 3, input_size=16, stored_size=[16, 16], channels=3,
    )  # fmt: skip
    return dataclasses.replace(card, **changes)


def _run(tmp_path: Path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.config.write_text("seed: 0\n")  # marks the folder as a run directory; the card makes it unread
    return run


def test_a_saved_target_loads_back_without_its_auxiliary_heads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    target = build_target(ModelConfig(name="resnet20"), 3, {"src": 5}, HeadConfig()).eval()
    run = _run(tmp_path)
    save_trained(target, _card(), run, {"src": 5})
    weights = load_file(run.weights)
    assert weights and not any(k.startswith("aux.") for k in weights)
    net, card = load_trained(run.root)
    assert card == _card() and not net.training
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), target(x, with_aux=False).logits)
    assert torch.equal(load_trained(run.weights)[0](x), net(x)), "the weights file names the same run"


def test_a_card_from_a_newer_sskt_or_of_another_kind_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    write_card(path, _card(format=FORMAT + 1))
    with pytest.raises(UserError, match=f"card format {FORMAT + 1}.*upgrade sskt") as info:
        read_card(path)
    path.write_text(json.dumps({"name": "not a card"}))
    with pytest.raises(UserError, match="is not an sskt model card"):
        read_card(path)
    assert "\n" not in str(info.value)


def test_the_probe_method_names_its_architecture_and_source_on_the_card() -> None:
    cfg = TrainConfig()
    cfg.sources = [SourceConfig(name="efficientnet_lite0.imagenet", input_size=32)]
    fields = METHODS.get("probe").card_fields(cfg)
    assert fields == {"architecture": PROBE, "source": dataclasses.asdict(cfg.sources[0])}


def test_a_run_without_a_card_is_told_a_probe_by_its_weights() -> None:
    target_state = {"backbone.conv.weight": torch.zeros(1), "fc.weight": torch.zeros(3, 4)}
    probe_state = {"bank.sources.features.net.w": torch.zeros(1), "fc.weight": torch.zeros(3, 4)}
    source = {"name": "efficientnet_lite0.imagenet"}
    assert legacy_fields("resnet20", [source], target_state, "run") == {"architecture": "resnet20", "source": None}
    assert legacy_fields("resnet20", [source], probe_state, "run") == {"architecture": PROBE, "source": source}
    with pytest.raises(UserError, match="a probe run's config has no sources"):
        legacy_fields("resnet20", [], probe_state, "run")
