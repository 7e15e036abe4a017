"""The contract every registered method keeps with the engine, tested over ``METHODS.list()`` (a new method is tested
the day it is registered): it takes a step on a tiny batch, its state survives a weights-only checkpoint, and a
restored copy resumes bit-identically; every method carries the average of its target's weights; and the frozen
networks a method declares are built once per run, with the soft-label cache on or off."""

from __future__ import annotations

import io
from collections import Counter

import pytest
import torch
from lightning_fabric import Fabric
from test_baselines import TinyCNN, toy_spec
from torch import Tensor, nn

from sskt.config import SourceConfig, TrainConfig
from sskt.data.spec import Batch
from sskt.methods import METHODS, Method, MethodContext
from sskt.models import MODELS
from sskt.sources import SOURCES, Pretrained

FAKE_SOURCE, FAKE_TEACHER = "contract_source", "contract_teacher"
CLASSES = 4
BUILT: Counter[str] = Counter()
"""Constructions of each fake frozen network, by name."""


def fake_net(classes: int) -> nn.Module:
    """A small classifier ending in ``nn.Linear`` (so a probe can replace it), with weights from its own generator:
    the same network every time it is built, and the global RNG untouched."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, classes))  # fmt: skip
    g = torch.Generator().manual_seed(classes)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net


def fake_factory(name: str, classes: int):
    def build(weights: str | None = None) -> Pretrained:
        BUILT[name] += 1
        return Pretrained(fake_net(classes), (0.5,) * 3, (0.25,) * 3, classes)

    return build


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> str:
    """A tiny target model, a 7-class source and a teacher with the task's 4 classes, registered for this test."""
    monkeypatch.setitem(MODELS._factories, "contract_cnn", lambda pretrained=False: TinyCNN())
    monkeypatch.setitem(SOURCES._factories, FAKE_SOURCE, fake_factory(FAKE_SOURCE, 7))
    monkeypatch.setitem(SOURCES._factories, FAKE_TEACHER, fake_factory(FAKE_TEACHER, CLASSES))
    BUILT.clear()
    return "contract_cnn"


def contract_cfg(name: str, model: str) -> TrainConfig:
    """Settings under which every method runs: one source, a teacher, peers, unlabelled rows, an average."""
    cfg = TrainConfig(seed=0, accelerator="cpu", progress=False, sources=[SourceConfig(name=FAKE_SOURCE)])
    cfg.model.name, cfg.method.name = model, name
    cfg.method.kd.teacher, cfg.method.dml.peers, cfg.method.maxl.psi = FAKE_TEACHER, [model], 2
    cfg.data.unlabeled, cfg.data.unlabeled_ratio = "rest", 1
    cfg.method.fixmatch.threshold = 0.0  # every unlabelled row passes: the term has a gradient
    cfg.ema.decay = 0.9
    return cfg


def batch(seed: int) -> Batch:
    """8 labelled rows, 8 unlabelled ones and their strong views."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(16, 3, 16, 16, generator=g)
    return Batch(images, torch.arange(8) % CLASSES, torch.arange(16), 8, strong=torch.randn(8, 3, 16, 16, generator=g))


def ready(name: str, model: str) -> Method:
    m = METHODS.create(name, ctx=MethodContext(contract_cfg(name, model), toy_spec(classes=CLASSES), 2))
    m.setup(Fabric(accelerator="cpu", devices=1))
    m.start_epoch(0)
    return m


def through_checkpoint(state: dict) -> dict:
    """``state`` saved and loaded back as the engine does (``weights_only=True``)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def weights(m: Method) -> dict[str, Tensor]:
    """Every trained network's and the average's tensors, by qualified name."""
    out = {f"{n}.{k}": v for n, net in m.trained().items() for k, v in net.state_dict().items()}
    return out | {f"ema.{k}": v for k, v in m.evaluated()[""].state_dict().items()}


@pytest.mark.parametrize("name", METHODS.list())
def test_every_method_steps_saves_restores_and_resumes_exactly(name: str, fakes: str) -> None:
    straight = ready(name, fakes)
    out = straight.training_step(batch(1))
    assert out.loss is not None and out.loss.isfinite(), name
    state = through_checkpoint(straight.state_dict())
    straight.training_step(batch(2))
    resumed = ready(name, fakes)
    resumed.load_state_dict(state)
    resumed.training_step(batch(2))
    expected, got = weights(straight), weights(resumed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), name


@pytest.mark.parametrize("name", METHODS.list())
def test_every_method_evaluates_the_average_of_its_targets_weights(name: str, fakes: str) -> None:
    m = ready(name, fakes)
    target = m.networks["target"].raw
    evaluated = m.evaluated()[""]
    evaluated = getattr(evaluated, "target", evaluated)  # the dual head evaluates its fused heads around it
    assert evaluated is m.ema.module and evaluated is not target
    m.training_step(batch(1))
    assert m.epoch_facts() == {"ema_decay_effective": pytest.approx(2 / 11)}, "d_1 = min(0.9, 2 / 11)"
    moved = [k for k, v in target.state_dict().items() if v.is_floating_point()]
    assert any(not torch.equal(target.state_dict()[k], m.ema.module.state_dict()[k]) for k in moved)


@pytest.mark.parametrize("cache", [False, True])
def test_each_frozen_network_is_built_once_per_run(colour_cfg, fakes: str, tmp_path, cache: bool) -> None:
    """``kd+sskt`` reads a source and a teacher: each is built once, shared by the cache (when on) and the method."""
    from sskt.engine import train

    cfg = colour_cfg(tmp_path / "run", "kd+sskt")
    cfg.model.name, cfg.epochs, cfg.precise_bn = fakes, 1, 0
    cfg.sources, cfg.method.kd.teacher = [SourceConfig(name=FAKE_SOURCE)], FAKE_TEACHER
    cfg.cache.enabled, cfg.cache.views, cfg.cache.dir = cache, 1, str(tmp_path / "cache")
    train(cfg)
    assert BUILT == {FAKE_SOURCE: 1, FAKE_TEACHER: 1}
    assert cache == (tmp_path / "cache").is_dir()


def test_methods_declare_what_the_engine_builds() -> None:
    cfg = TrainConfig(sources=[SourceConfig(name="a"), SourceConfig(name="a")])
    cfg.method.kd.teacher = "checkpoint:t"
    assert list(METHODS.get("kd+sskt").frozen_networks(cfg)) == ["kd_teacher", "a#0", "a#1"]  # the terms' order
    assert METHODS.get("scratch").frozen_networks(cfg) == {} and METHODS.get("dml").frozen_networks(cfg) == {}
    assert [n for n in METHODS.list() if METHODS.get(n).wants_strong_views(cfg)] == [
        n for n in METHODS.list() if "fixmatch" in n
    ]
