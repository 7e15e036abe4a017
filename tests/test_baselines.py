"""The baselines SSKT is compared with: KD (loss, teacher run consumed by path), DML (alternating peers) and MAXL
(meta step through the method), each trained end to end through the engine on a small Fashion-MNIST."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import learned
from lightning_fabric import Fabric
from torch import Tensor, nn

from sskt.config import TrainConfig
from sskt.data.datasets import TensorImageSet
from sskt.data.spec import Batch, DatasetSpec
from sskt.errors import UserError
from sskt.methods import METHODS, MethodContext, StepOutput
from sskt.methods import dml as dml_module
from sskt.methods.kd import TEACHER_KEY
from sskt.models import MODELS
from sskt.models.base import Backbone, StageInfo, TargetOutput
from sskt.sources import Source

LEARNED = 75.0
"""Test accuracy (percent) a correct method reaches on the colour task (4 classes: chance 25%), where a correct
implementation lands near 100%: far from the threshold on any CPU's rounding and any SSKT_TEST_SEED."""


class TinyCNN(Backbone):
    """Two strided conv-BN-ReLU stages (16, 32 channels): a target small enough for CPU tests on a busy machine."""

    family = "cifar"

    def __init__(self) -> None:
        super().__init__()
        self.feature_info = [StageInfo(16, 2), StageInfo(32, 4)]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(i, o, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
            for i, o in ((3, 16), (16, 32))
        )

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register 'tiny_cnn' for this test only (removed afterwards, so registry-wide contract tests never see it)."""
    monkeypatch.setitem(MODELS._factories, "tiny_cnn", lambda pretrained=False: TinyCNN())
    return "tiny_cnn"


def learning_cfg(colour_cfg, out: Path, tiny_model: str, name: str) -> TrainConfig:
    """``name`` training the tiny net on the colour task: 96 images, batch 16, 4 epochs (24 steps)."""
    cfg = colour_cfg(out, name)
    cfg.epochs, cfg.model.name = 4, tiny_model
    cfg.method.dml.peers = [tiny_model]
    cfg.method.maxl.psi = 2
    return cfg


def method_cfg(tiny_cfg: TrainConfig, tiny_model: str, name: str, out: str | None = None) -> TrainConfig:
    cfg = copy.deepcopy(tiny_cfg)
    cfg.out = out or tiny_cfg.out
    # 10 steps per epoch at a high rate: the tiny net gets past 40% on 200 labelled images in a few CPU seconds
    cfg.data.batch_size, cfg.optim.lr, cfg.epochs = 20, 0.2, 5
    cfg.model.name = tiny_model
    cfg.method.name = name
    cfg.method.dml.peers = [tiny_model]
    cfg.method.maxl.psi = 2
    return cfg


def toy_spec(n: int = 16, classes: int = 4) -> DatasetSpec:
    images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8)
    split = TensorImageSet(images, torch.arange(n) % classes)
    return DatasetSpec("toy", split, split, classes, (0.5,) * 3, (0.25,) * 3, 16)


def toy_batch(n: int = 8, classes: int = 4) -> Batch:
    g = torch.Generator().manual_seed(3)
    return Batch(torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % classes, torch.arange(n), n)


def built(name: str, model: str, primary: str = "ce", **method: object):
    """A method on the toy spec with ``method.primary_loss`` ``primary``, set up on a CPU Fabric (no engine)."""
    cfg = TrainConfig(seed=0, accelerator="cpu", progress=False)
    cfg.model.name = model
    cfg.method.name, cfg.method.primary_loss = name, primary
    cfg.method.dml.peers = [model]
    for key, value in method.items():
        setattr(getattr(cfg.method, name), key, value)
    m = METHODS.create(name, ctx=MethodContext(cfg, toy_spec(), steps_per_epoch=2))
    m.setup(Fabric(accelerator="cpu", devices=1))
    m.start_epoch(0)
    return m


# --- KD ---------------------------------------------------------------------------------------------------------
class FixedLogits(nn.Module):
    """A target whose logits are given (a parameter, so gradients show): golden values of the loss training
    computes."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: Tensor) -> TargetOutput:
        return TargetOutput(self.logits[: len(x)])


def kd_loss(z: Tensor, t: Tensor, labels: Tensor, primary: str = "ce", **kd: object) -> tuple[StepOutput, nn.Module]:
    """The KD method's ``compute_loss`` (what training calls) for student logits ``z`` against teacher logits ``t``
    (served as a batch's cached logits), and the fixed-logit target (its ``logits`` get the gradient)."""
    cfg = TrainConfig(seed=0, accelerator="cpu", progress=False)
    cfg.method.name, cfg.method.primary_loss, cfg.method.kd.teacher = "kd", primary, "checkpoint:unused"
    for key, value in kd.items():
        setattr(cfg.method.kd, key, value)
    spec = toy_spec(classes=z.shape[1])
    teacher = Source(nn.Identity(), name="t", num_classes=z.shape[1], mean=(0.5,) * 3, std=(0.5,) * 3,
                     target_mean=spec.mean, target_std=spec.std)  # fmt: skip
    m = METHODS.create("kd", ctx=MethodContext(cfg, spec, 1, frozen={TEACHER_KEY: teacher}))
    target = m.networks["target"].raw = FixedLogits(z)
    n = len(z)
    batch = Batch(torch.zeros(n, 3, 16, 16), labels, torch.arange(n), n, soft={TEACHER_KEY: t})
    return m.compute_loss(batch), target


# z = (0, 2 ln 3), t = (2 ln 3, 0), T = 2: q = softmax(z/2) = (1/4, 3/4), p = softmax(t/2) = (3/4, 1/4).
# KL(p || q) = 3/4 ln 3 + 1/4 ln(1/3) = ln(3) / 2, times T^2 = 4: 2 ln 3.
# CE at T = 1 with y = 1: softmax(z) = (1/10, 9/10), so -ln(9/10) = ln(10/9).
GOLDEN_Z = torch.tensor([[0.0, 2 * math.log(3)]])
GOLDEN_T = torch.tensor([[2 * math.log(3), 0.0]])
GOLDEN_CE, GOLDEN_KD = math.log(10 / 9), 2 * math.log(3)


def test_kd_golden_values_of_the_section_9_form_the_default() -> None:
    """``CE + lam T^2 KL``: the label loss keeps weight 1 (METHOD.md section 9)."""
    out, _ = kd_loss(GOLDEN_Z, GOLDEN_T, torch.tensor([1]), temperature=2.0, lam=0.9)
    assert out.logs["primary_loss"].item() == pytest.approx(GOLDEN_CE, rel=1e-6)
    assert out.logs["kd_loss"].item() == pytest.approx(GOLDEN_KD, rel=1e-6)
    assert out.loss.item() == pytest.approx(GOLDEN_CE + 0.9 * GOLDEN_KD, rel=1e-6)
    half, _ = kd_loss(GOLDEN_Z, GOLDEN_T, torch.tensor([1]), temperature=2.0, lam=0.9, label_weight=0.5)
    assert half.loss.item() == pytest.approx(0.5 * GOLDEN_CE + 0.9 * GOLDEN_KD, rel=1e-6)


def test_kd_golden_values_of_hintons_form() -> None:
    """``label_weight: null``: ``(1 - lam) CE + lam T^2 KL`` (section 7), and the released code's elementwise mean
    (``legacy``), which divides by the C = 2 classes as well."""
    out, _ = kd_loss(GOLDEN_Z, GOLDEN_T, torch.tensor([1]), temperature=2.0, lam=0.9, label_weight=None)
    assert out.logs["primary_loss"].item() == pytest.approx(GOLDEN_CE, rel=1e-6)
    assert out.logs["kd_loss"].item() == pytest.approx(GOLDEN_KD, rel=1e-6)
    assert out.loss.item() == pytest.approx(0.1 * GOLDEN_CE + 0.9 * GOLDEN_KD, rel=1e-6)
    legacy, _ = kd_loss(GOLDEN_Z, GOLDEN_T, torch.tensor([1]), temperature=2.0, lam=0.9, label_weight=None, legacy=True)
    assert legacy.logs["kd_loss"].item() == pytest.approx(math.log(3), rel=1e-6)


def test_kd_gradient_vanishes_when_student_matches_teacher() -> None:
    torch.manual_seed(0)
    t = torch.randn(6, 5) * 3
    out, target = kd_loss(t, t, torch.randint(0, 5, (6,)), temperature=4.0, lam=1.0, label_weight=None)
    (grad,) = torch.autograd.grad(out.loss, target.logits)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6)
    assert grad.abs().max().item() < 1e-7
    differs, target = kd_loss(t + torch.randn(6, 5), t, torch.zeros(6, dtype=torch.long), temperature=4.0, lam=1.0,
                              label_weight=None)  # fmt: skip
    (grad2,) = torch.autograd.grad(differs.loss, target.logits)  # a student that differs does get a gradient
    assert grad2.abs().max().item() > 1e-3


def test_kd_without_teacher_is_a_user_error(tiny_model: str) -> None:
    with pytest.raises(UserError, match="method.kd.teacher"):
        built("kd", tiny_model)


def test_kd_distils_a_teacher_run_by_path(colour_cfg, tiny_model: str, tmp_path: Path) -> None:
    from sskt.engine import train

    teacher_acc = train(learning_cfg(colour_cfg, tmp_path / "teacher", tiny_model, "scratch"))["final"]["test_acc"]
    cfg = learning_cfg(colour_cfg, tmp_path / "kd", tiny_model, "kd")
    cfg.method.kd.teacher = f"checkpoint:{tmp_path / 'teacher'}"
    summary = train(cfg)
    assert learned("teacher test_acc", teacher_acc, LEARNED)
    assert learned("kd test_acc", summary["final"]["test_acc"], LEARNED)
    records = [json.loads(line) for line in (tmp_path / "kd" / "records.jsonl").read_text().splitlines()]
    assert all("kd_loss" in r and "primary_loss" in r for r in records)


# --- DML --------------------------------------------------------------------------------------------------------
def _record_peer_predictions(monkeypatch) -> list[list[Tensor]]:
    """Make every DML loss call append the other peers' predictions it was given; return that list."""
    seen: list[list[Tensor]] = []
    real_loss = dml_module.dml_loss

    def recording_loss(logits, labels, others, *args):
        seen.append([o.clone() for o in others])
        return real_loss(logits, labels, others, *args)

    monkeypatch.setattr(dml_module, "dml_loss", recording_loss)
    return seen


def test_dml_peers_get_gradients_only_from_their_own_loss_in_alternating_order(tiny_model, monkeypatch) -> None:
    m = built("dml", tiny_model)
    target, peer = m.raw_nets
    snapshots: list[dict[str, list[Tensor | None]]] = []
    for opt in m.opts:

        def step(*args, _inner=opt.step, **kwargs):
            grads = {
                name: [p.grad.clone() if p.grad is not None else None for p in net.parameters()]
                for name, net in (("target", target), ("peer", peer))
            }
            snapshots.append(grads)
            return _inner(*args, **kwargs)

        monkeypatch.setattr(opt, "step", step)
    seen = _record_peer_predictions(monkeypatch)
    batch = toy_batch()
    target_before = dml_module.forward_keep_stats(target, batch.images)
    peer_before = dml_module.forward_keep_stats(peer, batch.images)
    m.training_step(batch)

    first, second = snapshots
    # the target's step: the target has gradients, the peer none yet
    assert all(g is not None for g in first["target"]) and all(g is None for g in first["peer"])
    # the peer's step: the peer has gradients; the peer's loss added nothing to the target's
    assert all(g is not None for g in second["peer"])
    for a, b in zip(first["target"], second["target"], strict=True):
        assert torch.equal(a, b)
    # the peer learnt from the target's prediction *after* the target's update
    target_after = dml_module.forward_keep_stats(target, batch.images)
    torch.testing.assert_close(seen[0][0], peer_before)
    torch.testing.assert_close(seen[1][0], target_after)
    assert not torch.allclose(seen[1][0], target_before)


def test_dml_without_alternation_uses_predictions_from_before_the_updates(tiny_model, monkeypatch) -> None:
    m = built("dml", tiny_model, alternate=False)
    target, _ = m.raw_nets
    seen = _record_peer_predictions(monkeypatch)
    batch = toy_batch()
    target_before = dml_module.forward_keep_stats(target, batch.images)
    m.training_step(batch)
    torch.testing.assert_close(seen[1][0], target_before)


def test_dml_evaluates_and_checkpoints_every_peer(tiny_model: str) -> None:
    m = built("dml", tiny_model)
    assert list(m.evaluated()) == ["", "peer1_"]
    state = m.state_dict()
    assert set(state) == {"networks"} and set(state["networks"]) == {"target", "peer1"}
    assert all(set(s) == {"module", "opt", "sched"} for s in state["networks"].values())
    with pytest.raises(UserError, match="peer1"):
        m.load_state_dict({"networks": {"target": state["networks"]["target"]}})
    # A checkpoint written before the base class kept the networks (nets/opts/scheds by name) still restores.
    legacy = {key: {n: s[part] for n, s in state["networks"].items()} for key, part in
              (("nets", "module"), ("opts", "opt"), ("scheds", "sched"))}  # fmt: skip
    m.load_state_dict(legacy)
    with pytest.raises(UserError, match="peer1"):
        m.load_state_dict({k: {"target": v["target"]} for k, v in legacy.items()})


# --- MAXL at the method level -------------------------------------------------------------------------------------
@pytest.mark.parametrize("second_order", [True, False])
def test_maxl_meta_step_moves_generator_not_network(tiny_model: str, second_order: bool) -> None:
    m = built("maxl", tiny_model, psi=3, second_order=second_order)
    net_state = {k: v.clone() for k, v in m.net_module.state_dict().items()}
    gen_before = [p.detach().clone() for p in m.gen_module.parameters()]
    batch = toy_batch()
    m.meta_step(batch.images, batch.labels)
    for key, value in m.net_module.state_dict().items():  # weights, BN running stats and batch counters
        assert torch.equal(value, net_state[key]), key
    moved = [not torch.equal(p, b) for p, b in zip(m.gen_module.parameters(), gen_before, strict=True)]
    assert sum(moved) >= len(moved) // 2


def test_maxl_aux_head_has_psi_slots_per_class(tiny_model: str) -> None:
    m = built("maxl", tiny_model, psi=3)
    out = m.net(toy_batch().images)
    assert out.logits.shape == (8, 4) and out.aux_logits["maxl"].shape == (8, 12)
    assert m.gen(toy_batch().images).logits.shape == (8, 12)


# --- every baseline trains through the engine, and resumes exactly --------------------------------------------------
@pytest.mark.parametrize("name", ["dml", "maxl"])
def test_baseline_learns_through_the_engine(colour_cfg, tiny_model: str, name: str, tmp_path: Path) -> None:
    from sskt.engine import train

    summary = train(learning_cfg(colour_cfg, tmp_path / name, tiny_model, name))
    assert learned(f"{name} test_acc", summary["final"]["test_acc"], LEARNED)
    if name == "dml":
        assert learned("dml peer1_test_acc", summary["final"]["peer1_test_acc"], LEARNED)


@pytest.mark.parametrize("name", ["dml", "maxl"])
def test_baseline_resumes_exactly(tiny_cfg: TrainConfig, tiny_model: str, name: str, tmp_path: Path) -> None:
    from sskt.engine import train

    straight = method_cfg(tiny_cfg, tiny_model, name, out=str(tmp_path / "straight"))
    straight.optim.schedule, straight.epochs = "constant", 2
    expected = train(straight)
    first = dataclasses.replace(straight, out=str(tmp_path / "resumed"), epochs=1)
    train(first)
    resumed = train(dataclasses.replace(first, epochs=2, resume=True))
    assert resumed["final"] == pytest.approx(expected["final"])


# --- method.primary_loss is honoured by every baseline, or refused ---------------------------------------------------
def test_kd_takes_the_configured_label_loss() -> None:
    from sskt.losses import focal

    z, t, y = torch.randn(6, 5), torch.randn(6, 5), torch.arange(6) % 5
    out, _ = kd_loss(z, t, y, primary="focal", temperature=4.0, lam=0.9, label_weight=None)
    ce, distill = out.logs["primary_loss"], out.logs["kd_loss"]
    assert ce.item() == pytest.approx(focal(z, y).item()) and ce.item() < F.cross_entropy(z, y).item()
    assert out.loss.item() == pytest.approx(0.1 * ce.item() + 0.9 * distill.item(), rel=1e-6)


def test_dml_and_maxl_use_the_configured_label_loss(tiny_model: str) -> None:
    from sskt.losses import cross_entropy, focal
    from sskt.methods.maxl import focal_to_probs

    assert built("dml", tiny_model, primary="focal").primary is focal
    assert built("dml", tiny_model, primary="ce").primary is cross_entropy
    assert built("maxl", tiny_model, primary="focal").primary is focal_to_probs  # the paper's
    assert built("maxl", tiny_model, primary="ce").primary is F.cross_entropy
    # The loss a DML peer minimises changes with it.
    batch = toy_batch()
    losses = {}
    for primary in ("ce", "focal"):
        torch.manual_seed(0)
        losses[primary] = built("dml", tiny_model, primary=primary).training_step(batch).loss.item()
    assert losses["focal"] < losses["ce"]


@pytest.mark.parametrize("name", ["kd", "dml", "maxl"])
def test_a_multi_label_primary_loss_is_refused_by_single_label_baselines(name: str, tiny_model: str) -> None:
    method = {"teacher": "checkpoint:/nonexistent"} if name == "kd" else {}
    with pytest.raises(UserError, match=rf"method '{name}' takes method.primary_loss 'ce' or 'focal'.*'bce'"):
        built(name, tiny_model, primary="bce", **method)


# --- MAXL as the authors ran it ---------------------------------------------------------------------------------------
def test_maxl_two_pass_updates_the_network_then_the_generator(tiny_model: str) -> None:
    m = built("maxl", tiny_model, psi=3, two_pass=True)
    assert m.phases() == ("multitask", "meta") and built("maxl", tiny_model).phases() == ("both",)
    batch = toy_batch()

    def snapshot():
        return [p.detach().clone() for p in m.net_module.parameters()], [
            p.detach().clone() for p in m.gen_module.parameters()
        ]

    def moved(before, after):
        return any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))

    m.start_phase("multitask")
    net0, gen0 = snapshot()
    out = m.training_step(batch)
    net1, gen1 = snapshot()
    assert moved(net0, net1) and not moved(gen0, gen1) and "meta_loss" not in out.logs
    m.start_phase("meta")
    out = m.training_step(batch)
    net2, gen2 = snapshot()
    assert not moved(net1, net2) and moved(gen1, gen2)
    assert out.loss is None and out.logs["meta_loss"].isfinite()


def test_maxl_mask_floor_and_scheduled_inner_lr(tiny_model: str) -> None:
    from sskt.methods.maxl import generate_labels

    m = built("maxl", tiny_model, psi=3, mask_floor=1e-8, inner_lr_follows_schedule=True, inner_lr=0.02)
    batch = toy_batch()
    labels = generate_labels(m.gen_module, batch.images, batch.labels, 3, m.mcfg.mask_floor)
    owned = (torch.arange(12)[None, :] // 3) == batch.labels[:, None]
    assert labels[~owned].min() > 0 and labels[~owned].max() < 1e-6  # the released code's leak, small here
    exact = generate_labels(m.gen_module, batch.images, batch.labels, 3)
    assert exact[~owned].max() == 0
    assert m.inner_lr() == pytest.approx(0.02)
    for group in m.opt.param_groups:
        group["lr"] = m.cfg.optim.lr / 4  # a schedule a quarter of the way down
    assert m.inner_lr() == pytest.approx(0.005)
    assert built("maxl", tiny_model, inner_lr=0.02).inner_lr() == pytest.approx(0.02)
    with pytest.raises(UserError, match="mask_floor must be in"):
        built("maxl", tiny_model, mask_floor=1.5)


def test_maxl_two_pass_trains_through_the_engine_and_resumes(colour_cfg, tiny_model: str, tmp_path: Path) -> None:
    from sskt.engine import train

    cfg = learning_cfg(colour_cfg, tmp_path / "straight", tiny_model, "maxl")
    cfg.method.maxl.two_pass, cfg.method.primary_loss, cfg.epochs = True, "focal", 2
    cfg.optim.schedule = "constant"  # the 1-epoch leg must see the same learning rates
    expected = train(cfg)
    records = [json.loads(line) for line in (tmp_path / "straight" / "records.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["meta_loss"]) and math.isfinite(r["train_loss"]) for r in records)
    first = dataclasses.replace(cfg, out=str(tmp_path / "resumed"), epochs=1)
    train(first)
    resumed = train(dataclasses.replace(first, epochs=2, resume=True))
    assert resumed["final"] == pytest.approx(expected["final"])


def test_checkpoints_written_before_the_base_class_kept_the_networks_still_restore(tiny_model: str) -> None:
    """The single-network layout (net/opt/sched) and MAXL's (plus gen/gen_opt/gen_sched) map onto the declared
    networks, so a run interrupted under the older layout resumes."""
    m = built("maxl", tiny_model, psi=2)
    m.training_step(toy_batch())
    nets = m.state_dict()["networks"]
    legacy = {"net": nets["target"]["module"], "opt": nets["target"]["opt"], "sched": nets["target"]["sched"]}
    legacy |= {"gen": nets["generator"]["module"], "gen_opt": nets["generator"]["opt"]}
    legacy["gen_sched"] = nets["generator"]["sched"]
    fresh = built("maxl", tiny_model, psi=2)
    fresh.load_state_dict(legacy)
    for key, value in fresh.state_dict()["networks"]["generator"]["module"].items():
        assert torch.equal(value, nets["generator"]["module"][key]), key
    assert fresh.opt.state_dict()["state"].keys() == m.opt.state_dict()["state"].keys()
