"""The engine end to end on a tiny Fashion-MNIST run: records, summary, checkpoint, resume, evaluate, checks."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch
from conftest import train_killed_after_first_checkpoint
from safetensors.torch import load_file

from sskt.config import SourceConfig, TrainConfig
from sskt.config_io import load_config
from sskt.engine import check_config, evaluate, train
from sskt.engine.checkpoint import load_checkpoint, save_atomic
from sskt.engine.seeding import rng_state, seed_everything, set_rng_state
from sskt.errors import UserError
from sskt.rundir import RunDir

RECORD_KEYS = {"epoch", "train_loss", "lr", "epoch_seconds", "images_per_second", "test_acc", "test_loss"}
RECORD_KEYS |= {"val_acc", "val_loss"}
SUMMARY_KEYS = {"final", "best", "best_epoch", "selected_by", "best_test_oracle", "best_test_oracle_epoch"}
SUMMARY_KEYS |= {"wall_seconds", "seed", "git_commit", "versions", "machine", "method", "epochs"}


def _small(cfg: TrainConfig, epochs: int, out: str) -> TrainConfig:
    """2 steps per epoch (40 labelled images, batch 20), 2 validation images per class: enough to exercise every
    phase, fast on 2 cores. Precise BN is on, so resuming must also replay the statistics recomputed before each
    evaluation."""
    cfg = dataclasses.replace(cfg, epochs=epochs, out=out, precise_bn=2)
    cfg.data = dataclasses.replace(cfg.data, labels_per_class=4, batch_size=20, val_per_class=2)
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_cfg_factory) -> dict:
    """An uninterrupted 2-epoch run, and the same run killed after epoch 1 then resumed."""
    root = tmp_path_factory.mktemp("runs")
    base = tiny_cfg_factory(root / "unused")
    full = train(_small(base, 2, str(root / "full")))
    cfg = _small(base, 2, str(root / "split"))
    train_killed_after_first_checkpoint(cfg)
    resumed = train(dataclasses.replace(cfg, resume=True))
    return {"root": root, "full": full, "resumed": resumed, "cfg": base}


def test_resume_reaches_the_same_numbers_and_weights(runs: dict) -> None:
    assert runs["resumed"]["final"] == runs["full"]["final"]
    for key in ("best", "best_epoch", "selected_by", "best_test_oracle"):
        assert runs["resumed"][key] == runs["full"][key], key
    full = load_file(runs["root"] / "full" / "model.safetensors")
    resumed = load_file(runs["root"] / "split" / "model.safetensors")
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    # The resumed run lists every epoch exactly once, with the uninterrupted run's losses.
    full_records, split_records = (
        RunDir(runs["root"] / "full").read_records(),
        RunDir(runs["root"] / "split").read_records(),
    )
    assert [r["epoch"] for r in split_records] == [1, 2]
    assert [r["train_loss"] for r in split_records] == [r["train_loss"] for r in full_records]


def test_run_directory_has_the_documented_files_and_keys(runs: dict) -> None:
    run = runs["root"] / "full"
    records = RunDir(run).read_records()
    assert len(records) == 2 and all(set(r) >= RECORD_KEYS for r in records)
    assert all(0 <= r["test_acc"] <= 100 for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert set(summary["versions"]) == {"python", "torch", "torchvision", "lightning", "sskt"}
    machine = summary["machine"]  # what timed the run: train_seconds compare only on the same kind of machine
    assert machine["accelerator"] == "cpu" and machine["cores"] >= 1 and machine["threads"] >= 1 and machine["cpu"]
    assert summary["final"]["test_acc"] == records[-1]["test_acc"]
    # The validation split chooses the epoch (the first with the highest val_acc); 'best' holds every metric there.
    chosen = max(records, key=lambda r: (r["val_acc"], -r["epoch"]))
    assert summary["selected_by"] == "val_acc" and summary["best_epoch"] == chosen["epoch"]
    assert summary["best"] == {k: v for k, v in chosen.items() if k.startswith(("val_", "test_"))}
    # The test-chosen figure survives only under a name that says so.
    assert summary["best_test_oracle"]["test_acc"] == max(r["test_acc"] for r in records)
    assert load_config(run / "config.yaml").epochs == 2
    assert any((run / "tb").iterdir())
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and "method" in ckpt and "rng" in ckpt


def test_evaluate_reproduces_the_final_metrics(runs: dict) -> None:
    run = runs["root"] / "full"
    final = runs["full"]["final"]
    for path in (run, run / "model.safetensors", run / "checkpoints" / "last.pt"):
        metrics = evaluate(path)
        assert metrics["test_acc"] == pytest.approx(final["test_acc"], abs=1e-6)
        assert metrics["test_loss"] == pytest.approx(final["test_loss"], rel=1e-5)


def test_refuses_to_overwrite_a_run_without_resume(runs: dict) -> None:
    cfg = _small(runs["cfg"], 2, str(runs["root"] / "full"))
    with pytest.raises(UserError, match="already has records"):
        train(cfg)


def _sskt(cfg: TrainConfig) -> None:
    """Make ``cfg`` an SSKT run (its own checks run only then)."""
    cfg.method.name, cfg.sources = "sskt", [SourceConfig()]


def test_check_config_names_the_bad_value_and_the_choices() -> None:
    for edit, bad in [
        (lambda c: setattr(c.model, "name", "resnet7"), "resnet7"),
        (lambda c: setattr(c.data, "name", "mnist9"), "mnist9"),
        (lambda c: setattr(c.method, "name", "magic"), "magic"),
        (lambda c: setattr(c.head, "kind", "mlp"), "mlp"),
        (lambda c: (_sskt(c), setattr(c.method.sskt, "aux_loss", "l2")), "l2"),
        (lambda c: (_sskt(c), setattr(c.method.sskt, "alpha_schedule", "step")), "step"),
        (lambda c: setattr(c, "precision", "8-bit"), "8-bit"),
        (lambda c: (setattr(c.cache, "enabled", True), setattr(c.cache, "dtype", "int8")), "int8"),
    ]:
        cfg = TrainConfig()
        edit(cfg)
        with pytest.raises(UserError, match=f"'{bad}'.*valid") as info:
            check_config(cfg)
        assert "\n" not in str(info.value)
    check_config(TrainConfig())


def test_check_config_refuses_inexact_topk_and_bad_split_sizes_before_any_work() -> None:
    cfg = TrainConfig(sources=[SourceConfig()])
    cfg.method.name = "sskt"  # the method declares the temperature it reads the cache at
    cfg.cache.enabled, cfg.cache.topk, cfg.method.sskt.temperature = True, 5, 3.0
    with pytest.raises(UserError, match="exact only at method.sskt.temperature 1"):
        check_config(cfg)
    for field, value in (("val_per_class", 0), ("crop_padding", -1)):
        cfg = TrainConfig()
        setattr(cfg.data, field, value)
        with pytest.raises(UserError, match=f"data.{field} must be"):
            check_config(cfg)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path) -> None:
    seed_everything(7)
    save_atomic({"rng": rng_state()}, tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[:2] == got[:2] and torch.equal(expected[2], got[2])
    assert not list(tmp_path.glob("*.tmp"))


def test_unreadable_checkpoint_is_a_user_error(tmp_path) -> None:
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_run_made_before_a_field_retired_still_reads(runs: dict, tmp_path) -> None:
    """``data.unlabeled_primary`` was never read and is gone; run directories that recorded it still load."""
    import shutil

    import yaml

    old = tmp_path / "old"
    shutil.copytree(runs["root"] / "full", old)
    config = yaml.safe_load((old / "config.yaml").read_text())
    config["data"]["unlabeled_primary"] = False
    (old / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert load_config(old / "config.yaml").epochs == 2
    assert evaluate(old)["test_acc"] == pytest.approx(runs["full"]["final"]["test_acc"], abs=1e-6)


def test_older_configs_move_the_ema_and_strong_views_and_keep_hintons_kd_form() -> None:
    """``method.ema_decay`` became ``ema.decay`` and ``method.fixmatch.{ops, magnitude_bins, cutout}`` the block
    ``strong_views``; KD runs made before ``method.kd.label_weight`` used 1 - lam."""
    from sskt.config_io import config_from_dict, config_to_dict, drop_retired

    old = config_from_dict(TrainConfig, drop_retired({"method": {"name": "scratch", "ema_decay": 0.999}}))
    assert old.ema.decay == 0.999 and old.ema.warmup and old.method.kd.label_weight == 1.0
    kd = config_from_dict(TrainConfig, drop_retired({"method": {"name": "kd+sskt", "kd": {"lam": 0.9}}}))
    assert kd.method.kd.label_weight is None and kd.method.kd.lam == 0.9
    fixmatch = {"name": "fixmatch", "fixmatch": {"threshold": 0.9, "ops": 1, "cutout": 0.25}}
    moved = config_from_dict(TrainConfig, drop_retired({"method": fixmatch}))
    assert (moved.strong_views.ops, moved.strong_views.cutout, moved.strong_views.magnitude_bins) == (1, 0.25, 10)
    assert moved.method.fixmatch.threshold == 0.9 and fixmatch["fixmatch"]["ops"] == 1, "the input is not changed"
    today = config_to_dict(TrainConfig(method=dataclasses.replace(TrainConfig().method, name="kd")))
    assert drop_retired(today) == today, "today's configs pass unchanged"


def test_the_v2_benchmark_records_still_read() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks" / "records"
    configs = {p.parent.name: load_config(p) for p in root.glob("fashion_v2*/*/config.yaml")}
    if not configs:
        pytest.skip("no benchmark records in this checkout")
    assert all(c.ema.decay == (0.999 if "scratch_ema" in name else None) for name, c in configs.items())
    assert all(c.method.kd.label_weight is None for name, c in configs.items() if "kd" in name.split("-")[0])
