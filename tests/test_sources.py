"""Sources: frozen, BatchNorm modes, preprocessing by hand, the bank, the real EfficientNet-Lite0 weights, errors.

Sources whose weights are downloads are built from random state dicts the tests write, through the same local-file
path users take (``SourceConfig.weights``); nothing is downloaded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from safetensors.torch import save_file
from torch import nn

from sskt.config import HeadConfig, ModelConfig, SourceConfig
from sskt.errors import UserError
from sskt.losses import soft_ce
from sskt.sources import SOURCES, Source, SourceBank, build_source
from sskt.sources.base import CPU_CHUNK

TARGET_MEAN = (0.3, 0.4, 0.5)
TARGET_STD = (0.2, 0.25, 0.3)
OFFLINE = [
    "efficientnet_lite0.imagenet",
    "resnet18.imagenet",
    "mobilenet_v3_small.imagenet",  # any torchvision classifier, through the '<arch>.imagenet' rule
    "resnet18.places365",
    "timm:test_resnet",
    "checkpoint",
]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _random_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def _write_run(folder: Path, seed: int = 0) -> nn.Module:
    """A run directory as `sskt train` leaves it: config.yaml + model.safetensors (aux heads included)."""
    from sskt.models import build_target

    torch.manual_seed(seed)
    target = build_target(ModelConfig(name="resnet20"), 10, {"resnet18.imagenet": 7}, HeadConfig()).eval()
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in target.state_dict().items()}, str(folder / "model.safetensors"))
    config = {"seed": seed, "model": {"name": "resnet20"}, "data": {"name": "fashion_mnist"}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return target


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Source name -> a local weights file (or run directory) with random weights."""
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(_random_state(torchvision.models.resnet18()), d / "resnet18.pt")
    torch.save(_random_state(torchvision.models.mobilenet_v3_small()), d / "mnv3.pt")
    # The CSAIL files: a legacy-format training checkpoint of a DataParallel model.
    places = {"module." + k: v for k, v in _random_state(torchvision.models.resnet18(num_classes=365)).items()}
    ckpt = {"epoch": 90, "arch": "resnet18", "state_dict": places, "best_prec1": 54.7}
    torch.save(ckpt, d / "resnet18_places365.pth.tar", _use_new_zipfile_serialization=False)
    import timm

    torch.save(_random_state(timm.create_model("test_resnet")), d / "test_resnet.pt")
    _write_run(d / "run")
    return {
        "resnet18.imagenet": str(d / "resnet18.pt"),
        "mobilenet_v3_small.imagenet": str(d / "mnv3.pt"),
        "resnet18.places365": str(d / "resnet18_places365.pth.tar"),
        "timm:test_resnet": str(d / "test_resnet.pt"),
        "checkpoint": f"checkpoint:{d / 'run'}",
    }


def build(name: str, weights: dict[str, str], **kw: object) -> Source:
    if name == "checkpoint":
        return build_source(SourceConfig(name=weights[name], **kw), TARGET_MEAN, TARGET_STD)
    return build_source(SourceConfig(name=name, weights=weights.get(name), **kw), TARGET_MEAN, TARGET_STD)


def _bn_layers(src: Source) -> list[nn.Module]:
    return [m for m in src.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _bn_stats(src: Source) -> list[torch.Tensor]:
    return [t.clone() for m in _bn_layers(src) for t in (m.running_mean, m.running_var)]


# --- registry ---------------------------------------------------------------------------------------------------
def test_listing_shows_names_and_families() -> None:
    listed = SOURCES.list()
    for name in ("resnet50.imagenet", "resnet50.places365", "resnet18.places365", "efficientnet_lite0.imagenet"):
        assert name in listed
    for family in ("<torchvision arch>.imagenet", "timm:<name>", "checkpoint:<name>"):
        assert family in listed
    assert "mobilenet_v3_small.imagenet" in SOURCES and "timm:resnet50" in SOURCES


# --- contract over every offline source ------------------------------------------------------------------------
@pytest.mark.parametrize("name", OFFLINE)
def test_source_is_frozen_and_its_logits_are_loss_targets(name: str, weights: dict[str, str]) -> None:
    src = build(name, weights, input_size=32)
    params = list(src.parameters())
    assert params and not any(p.requires_grad for p in params)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    logits = src(x)
    assert logits.shape == (2, src.num_classes) and not logits.requires_grad
    head = nn.Linear(3 * 32 * 32, src.num_classes)
    soft_ce(head(x.flatten(1)), logits).backward()  # a no_grad output, not an inference tensor: usable as a target
    assert head.weight.grad is not None and all(p.grad is None for p in params)


@pytest.mark.parametrize("name", OFFLINE)
def test_running_stats_stay_in_eval_mode_and_move_in_train_mode(name: str, weights: dict[str, str]) -> None:
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, 32, 32, generator=g) * 2 for _ in range(2)]
    for bn_mode, should_move in (("eval", False), ("train", True)):
        src = build(name, weights, bn_mode=bn_mode).train()
        assert src.training and all(m.training == should_move for m in _bn_layers(src))
        assert not any(m.training for m in src.modules() if isinstance(m, nn.Dropout))
        before = _bn_stats(src)
        for xb in batches:
            src(xb)
        moved = any(not torch.equal(a, b) for a, b in zip(before, _bn_stats(src), strict=True))
        assert moved == should_move, bn_mode


# --- preprocessing ----------------------------------------------------------------------------------------------
def _probe(**kw: object) -> Source:
    """A Source around a tiny 1x1 conv: only its preprocessing matters here."""
    kw.setdefault("target_mean", TARGET_MEAN)
    kw.setdefault("target_std", TARGET_STD)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Source(net, name="probe", num_classes=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.125), **kw)


def test_preprocess_matches_hand_computation() -> None:
    # One 2x2 image per channel, target-normalised values [[a, b], [c, d]].
    img = [[[0.0, 1.0], [-1.0, 2.0]], [[0.5, 0.5], [1.5, -0.5]], [[2.0, 0.0], [0.0, -2.0]]]
    src = _probe(input_size=4)
    out = src.preprocess(torch.tensor([img]))
    assert out.shape == (1, 3, 4, 4)
    for ch, (m_t, s_t, m_s, s_s) in enumerate(zip(TARGET_MEAN, TARGET_STD, src.mean, src.std, strict=True)):
        pix = [[v * s_t + m_t for v in row] for row in img[ch]]  # undo the target's normalisation
        # Bilinear 2 -> 4 (align_corners=False) samples input coordinates -0.25, 0.25, 0.75, 1.25, clamped at the
        # edges: weights [1, 0], [.75, .25], [.25, .75], [0, 1] along each axis.
        wts = [(1.0, 0.0), (0.75, 0.25), (0.25, 0.75), (0.0, 1.0)]
        for i, (ri0, ri1) in enumerate(wts):
            for j, (wj0, wj1) in enumerate(wts):
                v = ri0 * (wj0 * pix[0][0] + wj1 * pix[0][1]) + ri1 * (wj0 * pix[1][0] + wj1 * pix[1][1])
                assert out[0, ch, i, j].item() == pytest.approx((v - m_s) / s_s, abs=1e-5)


def test_resize_policies() -> None:
    x = torch.randn(2, 3, 32, 32)
    assert _probe(resize_factor=7 / 3).preprocess(x).shape[-1] == 74  # the released code's CIFAR 32 -> 74 px
    assert _probe(resize_factor=7 / 3).preprocess(torch.randn(1, 3, 96, 96)).shape[-1] == 224  # STL10
    assert _probe(input_size=20).preprocess(x).shape[-2:] == (20, 20)
    plain = _probe().preprocess(x)  # no resize: just the two normalisations
    expected = (x * torch.tensor(TARGET_STD).view(1, 3, 1, 1) + torch.tensor(TARGET_MEAN).view(1, 3, 1, 1) - 0.5) / (
        torch.tensor([0.5, 0.25, 0.125]).view(1, 3, 1, 1)
    )
    torch.testing.assert_close(plain, expected)


def test_clip_uses_its_centre_frame_and_grey_is_expanded() -> None:
    src = _probe(input_size=8)
    clip = torch.randn(2, 3, 5, 16, 16)
    torch.testing.assert_close(src(clip), src(clip[:, :, 2]))
    grey_src = _probe(target_mean=(0.3,), target_std=(0.2,))
    grey = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(grey_src.unnormalize(grey), (grey * 0.2 + 0.3).expand(-1, 3, -1, -1))


def test_bad_policy_values_are_user_errors() -> None:
    with pytest.raises(UserError, match="'batch'.*valid choices: eval, train"):
        _probe(bn_mode="batch")
    with pytest.raises(UserError, match="input_size"):
        _probe(input_size=0)
    with pytest.raises(UserError, match="resize_factor"):
        _probe(resize_factor=-2.0)


# --- the bank ---------------------------------------------------------------------------------------------------
def test_bank_matches_sources_one_by_one(weights: dict[str, str]) -> None:
    sources = {
        "I": build("resnet18.imagenet", weights, input_size=48),
        "E": build("efficientnet_lite0.imagenet", weights, input_size=48),  # shares the 48 px tensor with "I"
        "P": build("resnet18.places365", weights, resize_factor=7 / 3),
        "T": build("timm:test_resnet", weights),
    }
    x = torch.randn(3, 3, 32, 32)
    alone = {k: s(x) for k, s in sources.items()}
    for channels_last in (False, True):  # channels-last converts the networks in place: last
        bank = SourceBank(sources, channels_last=channels_last)
        assert len(bank.groups) == 3
        out = bank(x)
        assert list(out) == ["I", "E", "P", "T"]
        for k, v in out.items():
            torch.testing.assert_close(v, alone[k], rtol=1e-4, atol=1e-4)
            assert not v.requires_grad


def test_bank_chunks_give_the_whole_batch_logits_in_order(weights: dict[str, str]) -> None:
    sources = {"E": build("efficientnet_lite0.imagenet", weights, input_size=40)}
    x = torch.randn(7, 3, 32, 32)
    whole = SourceBank(sources, chunk=0)(x)["E"]
    for chunk in (1, 3, 7, 100):
        torch.testing.assert_close(SourceBank(sources, chunk=chunk)(x)["E"], whole, rtol=1e-4, atol=1e-4)
    auto = SourceBank(sources)
    assert auto.chunk_size(torch.zeros(100, 3, 8, 8)) == CPU_CHUNK  # CPU: small chunks are faster per image
    assert SourceBank(sources, chunk=0).chunk_size(torch.zeros(100, 3, 8, 8)) == 100
    with pytest.raises(UserError, match="chunk must be >= 0.*got -1"):
        SourceBank(sources, chunk=-1)


def test_a_bn_train_source_sees_the_whole_batch_at_once(weights: dict[str, str]) -> None:
    """Batch statistics are the training batch's: the bank never splits it for a source in BatchNorm train mode,
    whatever the chunk setting, and its running statistics advance once per batch."""
    x = torch.randn(2 * CPU_CHUNK + 5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    reference = build("resnet18.imagenet", weights, bn_mode="train").train()
    whole = reference(x)
    for chunk in (None, 3):
        src = build("resnet18.imagenet", weights, bn_mode="train").train()
        bank = SourceBank({"I": src}, chunk=chunk)
        assert bank.chunk_size(x) == len(x)
        torch.testing.assert_close(bank(x)["I"], whole, rtol=1e-4, atol=1e-4)  # channels-last rounding only
        tracked = {int(m.num_batches_tracked) for m in _bn_layers(src)}
        assert tracked == {1}, "one batch, one running-statistics update"
        for a, b in zip(_bn_stats(src), _bn_stats(reference), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bank_keys_default_to_names_and_must_be_unique() -> None:
    a, b = _probe(), _probe()
    assert list(SourceBank([a])(torch.randn(1, 3, 8, 8))) == ["probe"]
    with pytest.raises(UserError, match="unique"):
        SourceBank([a, b])
    assert SourceBank({})(torch.randn(1, 3, 8, 8)) == {}


# --- the real EfficientNet-Lite0 weights ------------------------------------------------------------------------
def _rings(size: int = 224) -> torch.Tensor:
    """Concentric black and white rings, [1, 3, size, size] pixels in [0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt()
    return ((r // 10) % 2).float().expand(1, 3, size, size)


def _target_normalise(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - torch.tensor(TARGET_MEAN).view(1, 3, 1, 1)) / torch.tensor(TARGET_STD).view(1, 3, 1, 1)


def test_efficientnet_lite0_is_confident_and_stable_on_a_synthetic_image(weights: dict[str, str]) -> None:
    src = build("efficientnet_lite0.imagenet", weights)
    x = _target_normalise(_rings())
    p, p_flip = src(x).softmax(1)[0], src(x.flip(-1)).softmax(1)[0]
    # Uniform over 1000 classes would be 0.001; the ported weights put most of their mass on one class.
    assert p.max() > 0.3 and p.argmax() == p_flip.argmax()
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    assert entropy < 0.5 * math.log(1000)


def test_efficientnet_lite0_recognises_a_photograph(weights: dict[str, str]) -> None:
    mpl = pytest.importorskip("matplotlib")
    photo = Path(mpl.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip("matplotlib's sample photograph is not installed")
    from PIL import Image

    rgb = np.asarray(Image.open(photo).convert("RGB"))
    pixels = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float()[None] / 255
    src = build("efficientnet_lite0.imagenet", weights, input_size=224)
    assert src(_target_normalise(pixels)).argmax().item() == 652  # ImageNet 'military uniform'


# --- identity ---------------------------------------------------------------------------------------------------
def test_fingerprint_describes_everything_that_makes_the_logits(weights: dict[str, str]) -> None:
    a = build("mobilenet_v3_small.imagenet", weights, input_size=64)
    fp = a.fingerprint()
    json.dumps(fp)  # a cache key must serialise
    assert fp["name"] == "mobilenet_v3_small.imagenet" and fp["num_classes"] == 1000 and fp["input_size"] == 64
    assert fp["mean"] == pytest.approx([0.485, 0.456, 0.406]) and fp["target_std"] == pytest.approx(TARGET_STD)
    assert fp["bn_mode"] == "eval" and "resize_mode" in fp and "resize_factor" in fp
    assert a.fingerprint() == fp and build("mobilenet_v3_small.imagenet", weights, input_size=64).fingerprint() == fp
    assert build("mobilenet_v3_small.imagenet", weights, input_size=32).fingerprint() != fp
    with torch.no_grad():
        b = build("mobilenet_v3_small.imagenet", weights, input_size=64)
        b.net.classifier[-1].bias.add_(1.0)
    assert b.fingerprint()["weights_sha256"] != fp["weights_sha256"]


# --- errors -----------------------------------------------------------------------------------------------------
def test_unknown_sources_are_user_errors_naming_the_choices() -> None:
    with pytest.raises(UserError, match="unknown source 'resnet50.imagent'.*resnet50.imagenet"):
        build_source(SourceConfig(name="resnet50.imagent"), TARGET_MEAN, TARGET_STD)
    with pytest.raises(UserError, match="'resnet51'.*resnet50"):
        build_source(SourceConfig(name="resnet51.imagenet"), TARGET_MEAN, TARGET_STD)
    with pytest.raises(UserError, match="timm model 'no_such_net'"):
        build_source(SourceConfig(name="timm:no_such_net"), TARGET_MEAN, TARGET_STD)


def test_corrupt_and_missing_checkpoints_are_user_errors(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "resnet20"}, "data": {"name": "cifar10"}}))
    (run / "model.safetensors").write_bytes(b"\x00garbage, not a weights file" * 10)
    with pytest.raises(UserError, match="cannot be read"):
        build_source(SourceConfig(name=f"checkpoint:{run}"), TARGET_MEAN, TARGET_STD)
    garbage = tmp_path / "places.pth.tar"
    garbage.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="cannot be read"):
        build_source(SourceConfig(name="resnet18.places365", weights=str(garbage)), TARGET_MEAN, TARGET_STD)
    with pytest.raises(UserError, match="does not exist"):
        build_source(SourceConfig(name=f"checkpoint:{tmp_path / 'nope'}"), TARGET_MEAN, TARGET_STD)
    with pytest.raises(UserError, match="does not exist"):
        build_source(SourceConfig(name="resnet18.imagenet", weights=str(tmp_path / "x.pt")), TARGET_MEAN, TARGET_STD)


def test_weights_of_the_wrong_shape_are_user_errors(weights: dict[str, str]) -> None:
    with pytest.raises(UserError, match="do not fit"):
        build_source(SourceConfig(name="resnet18.places365", weights=weights["resnet18.imagenet"]), (0,) * 3, (1,) * 3)


def test_failed_download_says_what_and_where(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match=r"could not fetch .*resnet50_places365\.pth\.tar.*weights=<path>"):
        build_source(SourceConfig(name="resnet50.places365"), TARGET_MEAN, TARGET_STD)


# --- checkpoint sources -----------------------------------------------------------------------------------------
def test_checkpoint_source_is_the_trained_primary_classifier(tmp_path: Path) -> None:
    from sskt.data.datasets import STATS

    target = _write_run(tmp_path / "run", seed=3)
    mean, std = STATS["fashion_mnist"]
    src = build_source(SourceConfig(name=f"checkpoint:{tmp_path / 'run'}"), mean, std)
    assert src.num_classes == 10 and src.mean == pytest.approx(mean)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = target(x, with_aux=False).logits
    torch.testing.assert_close(src(x), expected, rtol=1e-5, atol=1e-5)
    # A bare .pt state dict with the run's config.yaml beside it.
    torch.save(target.state_dict(), tmp_path / "run" / "weights.pt")
    bare = build_source(SourceConfig(name=f"checkpoint:{tmp_path / 'run' / 'weights.pt'}"), mean, std)
    torch.testing.assert_close(bare(x), expected, rtol=1e-5, atol=1e-5)


# --- which ImageNet weights a torchvision source carries -----------------------------------------------------------
def test_imagenet_weights_are_named_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    """'resnet50.imagenet' is torchvision's DEFAULT (V2); 'resnet50.imagenet_v1' is the V1 file the authors' code
    loaded with pretrained=True. Both are listed, and each fetches its own file."""
    from sskt.sources import zoo

    listed = SOURCES.list()
    assert "resnet50.imagenet" in listed and "resnet50.imagenet_v1" in listed
    assert "<torchvision arch>.imagenet_v1" in listed and "mobilenet_v3_small.imagenet_v1" in SOURCES
    fetched: list[str] = []
    state = _random_state(torchvision.models.resnet50())

    def fake_download(url: str, what: str) -> dict[str, torch.Tensor]:
        fetched.append(url)
        return state

    monkeypatch.setattr(zoo, "load_weights", lambda spec, url, what: fake_download(url, what))
    for name in ("resnet50.imagenet", "resnet50.imagenet_v1"):
        build_source(SourceConfig(name=name), TARGET_MEAN, TARGET_STD)
    assert fetched[0].endswith("resnet50-11ad3fa6.pth")  # IMAGENET1K_V2, 80.86%
    assert fetched[1].endswith("resnet50-0676ba61.pth")  # IMAGENET1K_V1, 76.13%


def test_faithful_presets_use_the_authors_v1_weights() -> None:
    presets = sorted((Path(__file__).resolve().parents[1] / "configs" / "paper").glob("*_faithful.yaml"))
    assert presets
    for preset in presets:
        names = [s["name"] for s in yaml.safe_load(preset.read_text()).get("x-sources", {}).values()]
        assert "resnet50.imagenet" not in names, preset.name
    faithful = yaml.safe_load((presets[0].parent / "cifar10_faithful.yaml").read_text())
    assert faithful["x-sources"]["I"]["name"] == "resnet50.imagenet_v1"


def test_timm_source_with_a_weights_url_loads_that_file(weights: dict[str, str], monkeypatch) -> None:
    """A URL given as a timm source's weights is what loads, not timm's hub weights for the model."""
    import timm

    fetched: list[str] = []

    def from_url(url: str, **kwargs: object) -> dict[str, torch.Tensor]:
        fetched.append(url)
        return torch.load(weights["timm:test_resnet"], weights_only=True)

    def no_hub(*args: object, **kwargs: object) -> None:
        raise AssertionError("timm's pretrained download must not run when weights are given")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", from_url)
    real_create = timm.create_model
    monkeypatch.setattr(
        timm, "create_model", lambda n, pretrained=False, **kw: no_hub() if pretrained else real_create(n, **kw)
    )
    url = "https://example.org/my_test_resnet.pth"
    src = build_source(SourceConfig(name="timm:test_resnet", weights=url), TARGET_MEAN, TARGET_STD)
    assert fetched == [url]
    expected = torch.load(weights["timm:test_resnet"], weights_only=True)
    for key, value in src.net.state_dict().items():
        assert torch.equal(value, expected[key]), key
    from_file = build("timm:test_resnet", weights)
    assert all(torch.equal(v, from_file.net.state_dict()[k]) for k, v in src.net.state_dict().items())
