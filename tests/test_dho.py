"""The adapted teacher by the linear-evaluation protocol (L-BFGS probe) and the DHO-style dual head: the probe fits
its objective's optimum with the L2 strength validation chose, the dual head trains its second head on the teacher,
fuses both heads with weights chosen on validation, and ships the fused prediction (evaluate, ONNX)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import learned

from sskt.config import SourceConfig
from sskt.data import build_dataset, eval_batches
from sskt.data.datasets import SubsetImageSet
from sskt.data.stream import train_split
from sskt.engine import evaluate, train
from sskt.errors import UserError
from sskt.methods import METHODS
from sskt.models.fused import choose_fusion, fuse
from sskt.rundir import RunDir
from sskt.sources.linear_eval import objective
from sskt.trained import load_trained

LITE0 = SourceConfig(name="efficientnet_lite0.imagenet", input_size=32)


def test_fusion_is_a_mixture_of_the_two_heads() -> None:
    gen = torch.Generator().manual_seed(0)
    z_ce, z_kd = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    assert torch.allclose(fuse(z_ce, z_kd, 0.0, 2.0), F.log_softmax(z_ce, 1), atol=1e-6)
    assert torch.allclose(fuse(z_ce, z_kd, 1.0, 2.0), F.log_softmax(z_kd / 2, 1), atol=1e-6)
    mix = 0.7 * F.softmax(z_ce, 1) + 0.3 * F.softmax(z_kd / 0.5, 1)
    assert torch.allclose(fuse(z_ce, z_kd, 0.3, 0.5).exp(), mix, atol=1e-6)
    # Heads that are right on different rows: only a mixture gets every row.
    z_ce = torch.tensor([[5.0, 0.0], [0.4, 0.0]])  # row 1 wrong but unsure
    z_kd = torch.tensor([[0.0, 1.0], [0.0, 5.0]])  # row 0 wrong but unsure
    a, beta, acc = choose_fusion(z_ce, z_kd, torch.tensor([0, 1]), [0.0, 0.5, 1.0], [1.0])
    assert (a, beta, acc) == (0.5, 1.0, 100.0)


@pytest.fixture(scope="module")
def lbfgs_probe(colour_cfg, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("lbfgs") / "probe"
    cfg = colour_cfg(out, "probe")
    cfg.sources, cfg.precise_bn, cfg.epochs = [LITE0], 0, 1
    cfg.data.labels_per_class, cfg.data.val_per_class = 8, 4
    cfg.method.probe.solver, cfg.method.probe.l2 = "lbfgs", [1e-3, 1e-1]
    return {"cfg": cfg, "summary": train(cfg), "out": out}


def test_the_lbfgs_probe_reaches_the_optimum_at_the_strength_validation_chose(lbfgs_probe) -> None:
    cfg, summary = lbfgs_probe["cfg"], lbfgs_probe["summary"]
    assert learned("lbfgs probe test_acc", summary["final"]["test_acc"], 75)
    record = RunDir(lbfgs_probe["out"]).read_records()[0]
    assert record["probe_l2"] in (1e-3, 1e-1) and record["probe_fit_seconds"] > 0
    net, card = load_trained(lbfgs_probe["out"])
    probe = net.net
    spec = build_dataset(cfg.data)
    labelled = SubsetImageSet(spec.train, train_split(spec, cfg.data, cfg.seed).labeled)
    feats, labels = zip(*((probe.bank(x)["features"], y) for x, y in eval_batches(labelled, spec, 40)), strict=True)
    w = probe.fc.weight.detach().double().requires_grad_()
    b = probe.fc.bias.detach().double().requires_grad_()
    objective(w, b, torch.cat(feats).double(), torch.cat(labels), record["probe_l2"]).backward()
    assert max(w.grad.abs().max().item(), b.grad.abs().max().item()) < 1e-4, "fc is the objective's minimum"


def test_the_lbfgs_probe_refuses_settings_it_cannot_use(colour_cfg, tmp_path) -> None:
    cfg = colour_cfg(tmp_path / "p", "probe")
    cfg.sources, cfg.method.probe.solver = [LITE0], "lbfgs"
    with pytest.raises(UserError, match="set data.val_per_class"):
        METHODS.get("probe").check(cfg)
    cfg.data.val_per_class = 4
    with pytest.raises(UserError, match="set epochs 1"):
        METHODS.get("probe").check(cfg)


@pytest.fixture(scope="module")
def dho_run(colour_cfg, lbfgs_probe, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("dho") / "dho"
    cfg = colour_cfg(out, "dho")
    cfg.method.kd.teacher = f"checkpoint:{lbfgs_probe['out']}"
    cfg.data.labels_per_class, cfg.data.val_per_class, cfg.data.batch_size = 8, 4, 8
    cfg.data.unlabeled, cfg.data.unlabeled_ratio = "rest", 1
    cfg.epochs = 4
    return {"cfg": cfg, "summary": train(cfg), "out": out}


def test_the_dual_head_learns_and_ships_its_fused_prediction(dho_run) -> None:
    summary, out = dho_run["summary"], dho_run["out"]
    assert learned("dho final test_acc", summary["final"]["test_acc"], 75)
    card = json.loads((out / "model.json").read_text())
    fusion = card["fusion"]
    assert card["format"] == 2 and fusion["head"] == "dho"
    assert fusion["a"] in dho_run["cfg"].method.dho.alphas and fusion["beta"] in dho_run["cfg"].method.dho.betas
    assert evaluate(out)["test_acc"] == pytest.approx(summary["final"]["test_acc"])


def test_the_fused_prediction_survives_onnx_export(dho_run, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from sskt.inference import export

    result = export(dho_run["out"], "onnx", tmp_path / "dho.onnx")
    assert result["max_abs_diff"] < 1e-3
