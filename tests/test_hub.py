"""A model that goes to a hub (sskt.hub): `sskt export RUN --format hf --out DIR` writes config.json,
model.safetensors and a README model card; `sskt.load_pretrained(DIR)` rebuilds the same network offline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import error_line

import sskt
from sskt import hub
from sskt.cli import main
from sskt.engine import train
from sskt.errors import UserError
from sskt.inference import sample_batch
from sskt.trained import load_trained


@pytest.fixture(scope="module")
def run(tiny_cfg_factory, tmp_path_factory) -> Path:
    """A finished one-epoch tiny run, in a grid-like cell folder (``<label>-seed<N>``)."""
    cfg = tiny_cfg_factory(tmp_path_factory.mktemp("hub") / "grid" / "tiny-seed0")
    cfg.epochs = 1
    train(cfg)
    return Path(cfg.out)


def export(run: Path, out: Path, *extra: str) -> int:
    return main(["export", str(run), "--format", "hf", "--out", str(out), *extra])


def front_matter(readme: Path) -> dict:
    """The YAML metadata between the README's leading ``---`` lines."""
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_an_exported_folder_reloads_with_the_same_logits(run, tmp_path, capsys) -> None:
    out = tmp_path / "model"
    assert export(run, out, "--license", "mit") == 0
    assert json.loads(capsys.readouterr().out)["max_abs_diff"] <= 1e-6
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()
    original, card = load_trained(run)
    x = sample_batch(card, n=16, seed=3)
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "resnet20" and config["num_classes"] == 10 and config["library_name"] == "sskt"
    assert config["label_names"] == card.class_names and len(config["label_names"]) == 10
    assert config["input_size"] == list(x.shape[1:]) and config["input_size"][1:] == [card.input_size] * 2
    assert (config["mean"], config["std"]) == (card.mean, card.std) and "fusion" not in config
    net = sskt.load_pretrained(out)
    assert isinstance(net, torch.nn.Module) and not net.training
    with torch.inference_mode():
        assert torch.equal(net(x), original(x))


def test_the_model_card_carries_the_hub_metadata(run, tmp_path) -> None:
    out = tmp_path / "model"
    assert export(run, out, "--license", "apache-2.0") == 0
    meta = front_matter(out / "README.md")
    assert meta["library_name"] == "sskt" and meta["license"] == "apache-2.0"
    assert {"sskt", "image-classification", "scratch", "resnet20"} <= set(meta["tags"])
    assert meta["datasets"] == ["zalando-datasets/fashion_mnist"]
    summary = json.loads((run / "summary.json").read_text())
    (metric,) = meta["model-index"][0]["results"][0]["metrics"]
    assert metric["type"] == "accuracy" and metric["value"] == pytest.approx(summary["final"]["test_acc"])
    assert "huggingface-cli upload" in (out / "README.md").read_text()
    assert export(run, tmp_path / "unlicensed") == 0
    assert front_matter(tmp_path / "unlicensed" / "README.md")["license"] == "unknown"


def test_from_report_gives_the_grid_mean_std_n(run, tmp_path) -> None:
    """A second seed of the same setting (a copy with seed 1 and another accuracy): the card reports the report's
    mean +- std (n=2) of the group."""
    from sskt.experiments.report import write_report

    other = run.parent / "tiny-seed1"
    if not other.exists():
        shutil.copytree(run, other)
        config = yaml.safe_load((other / "config.yaml").read_text()) | {"seed": 1}
        (other / "config.yaml").write_text(yaml.safe_dump(config))
        summary = json.loads((other / "summary.json").read_text())
        summary["seed"], summary["final"]["test_acc"] = 1, summary["final"]["test_acc"] + 2.0
        (other / "summary.json").write_text(json.dumps(summary))
    write_report(run.parent, plots=False)
    out = tmp_path / "model"
    assert export(run, out, "--from-report", str(run.parent)) == 0
    accs = [json.loads((r / "summary.json").read_text())["final"]["test_acc"] for r in (run, other)]
    (metric,) = front_matter(out / "README.md")["model-index"][0]["results"][0]["metrics"]
    assert metric["value"] == pytest.approx(sum(accs) / 2, abs=1e-3)
    assert "+- 1.41 (n=2)" in metric["name"]


def test_bad_targets_are_one_line_and_nothing_is_lost(run, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "exists and is not empty; pass --force" in error_line(capsys, ["export", str(run), "--format", "hf",
                                                                          "--out", str(out)])  # fmt: skip
    assert (out / "keep.txt").read_text() == "mine"
    for bad in (run, run.parent, run / "checkpoints"):
        err = error_line(capsys, ["export", str(run), "--format", "hf", "--out", str(bad), "--force"])
        assert "would replace" in err, err
    err = error_line(capsys, ["export", str(run), "--format", "hff", "--out", str(out)])
    assert err.endswith("valid choices: hf, onnx, safetensors, torchscript")
    monkeypatch.setattr(hub, "parity", lambda *a: (_ for _ in ()).throw(UserError("parity failed")))
    assert "parity failed" in error_line(capsys, ["export", str(run), "--format", "hf", "--out", str(out), "--force"])
    assert (out / "keep.txt").read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["model"]
    monkeypatch.undo()
    assert export(run, out, "--force") == 0 and not (out / "keep.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "no temporary or old folder is left"


def test_a_folder_sskt_did_not_write_is_one_line(tmp_path) -> None:
    with pytest.raises(UserError, match="is not a model folder"):
        sskt.load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 3}))
    with pytest.raises(UserError, match="holds no sskt model card"):
        sskt.load_pretrained(tmp_path)


def test_import_sskt_stays_light() -> None:
    code = "import sys, sskt; assert 'torch' not in sys.modules; assert callable(sskt.load_pretrained)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
