"""The inference boundary: a finished run ships its target without the auxiliary heads plus model.json, and
`sskt predict` / `sskt export` use them without the training set-up."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import error_line
from safetensors.torch import load_file

from sskt.cli import main
from sskt.engine import evaluate, train
from sskt.inference import preprocess, read_image, sample_batch
from sskt.rundir import RunDir
from sskt.sources import SOURCES
from sskt.trained import load_trained, read_card


@pytest.fixture(scope="module")
def sskt_run(colour_cfg, tmp_path_factory) -> dict:
    """An SSKT run on the colour folder (4 classes, 16 px): its target has an auxiliary head while training."""
    cfg = colour_cfg(tmp_path_factory.mktemp("ship") / "run", "sskt")
    return {"cfg": cfg, "summary": train(cfg), "run": RunDir(cfg.out)}


def test_a_finished_run_ships_the_target_and_its_card(sskt_run) -> None:
    run = sskt_run["run"]
    weights = load_file(run.weights)
    assert weights and not any(k.startswith("aux.") for k in weights), "the heads stay in the training checkpoint"
    card = read_card(run.model_card)
    assert (card.architecture, card.task, card.num_classes) == ("resnet20", "single_label", 4)
    assert card.class_names == ["c0", "c1", "c2", "c3"] and card.input_size == 16 and card.channels == 3
    assert len(card.mean) == len(card.std) == 3 and card.sskt_version
    assert evaluate(run.root)["test_acc"] == pytest.approx(sskt_run["summary"]["final"]["test_acc"])


def test_a_checkpoint_source_reads_the_card_not_the_dataset(sskt_run, monkeypatch) -> None:
    import sskt.sources.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "build_dataset", lambda *a, **k: pytest.fail("the dataset was rebuilt"))
    teacher = SOURCES.create(f"checkpoint:{sskt_run['run'].root}")
    card = read_card(sskt_run["run"].model_card)
    assert teacher.num_classes == 4 and list(teacher.mean) == card.mean


def test_predict_gives_the_evaluated_classes_and_names_bad_files(sskt_run, colour_folder, tmp_path, capsys) -> None:
    """Each test image of class c<k> is predicted as c<k> as often as the run's test accuracy says; a broken
    file gets one error line naming it while the other images are still predicted."""
    files = sorted((colour_folder / "test").rglob("*.png"))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    status = main(
        ["predict", str(sskt_run["run"].root), str(colour_folder / "test"), str(bad), "--json", "--topk", "2"]
    )
    out, err = capsys.readouterr()
    assert status == 2
    assert err.strip().splitlines() == [f"error: {str(bad)!r} is not a readable image (UnidentifiedImageError)"]
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == len(files) and all(len(r["top"]) == 2 for r in results)
    correct = sum(r["top"][0]["class"] == f"c{r['file'].split('/c')[-1][0]}" for r in results)
    assert 100 * correct / len(files) == pytest.approx(sskt_run["summary"]["final"]["test_acc"])
    assert all(r["top"][0]["probability"] >= r["top"][1]["probability"] for r in results)


def test_predict_preprocesses_as_evaluation_does(sskt_run, colour_folder) -> None:
    net, card = load_trained(sskt_run["run"].root)
    image = read_image(next((colour_folder / "test" / "c1").glob("*.png")), card)
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 16)
    x = preprocess(image[None], card)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors"])
def test_export_round_trips_within_tolerance(sskt_run, tmp_path, fmt, capsys) -> None:
    out = tmp_path / f"model.{fmt}"
    assert main(["export", str(sskt_run["run"].root), "--format", fmt, "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert out.stat().st_size > 10_000 and report["max_abs_diff"] <= 1e-4
    if fmt == "onnx":
        import onnxruntime

        net, card = load_trained(sskt_run["run"].root)
        x = sample_batch(card, n=3, seed=1)  # another batch size than the export's: the batch axis is dynamic
        got = onnxruntime.InferenceSession(str(out)).run(["logits"], {"images": x.numpy()})[0]
        with torch.inference_mode():
            assert torch.allclose(torch.from_numpy(got), net(x), atol=1e-4)


def test_export_refuses_a_difference_above_the_tolerance(sskt_run, tmp_path, monkeypatch, capsys) -> None:
    import sskt.inference as inference

    real = inference.EXPORTERS["torchscript"]
    monkeypatch.setitem(inference.EXPORTERS, "torchscript", lambda *a: real(*a) + 1e-3)
    out = tmp_path / "model.pt"
    line = error_line(capsys, ["export", str(sskt_run["run"].root), "--format", "torchscript", "--out", str(out)])
    assert "differs from PyTorch by 0.001" in line and not out.exists()


def test_export_names_the_valid_formats(sskt_run, capsys, tmp_path) -> None:
    line = error_line(capsys, ["export", str(sskt_run["run"].root), "--format", "tflite", "--out", str(tmp_path / "m")])
    assert "tflite" in line and "onnx" in line and "torchscript" in line


def test_a_run_made_before_the_card_still_loads(sskt_run, tmp_path) -> None:
    """Without model.json the card is derived from config.yaml and the dataset: the same network."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(sskt_run["run"].root, old)
    (old / "model.json").unlink()
    net_old, card_old = load_trained(old)
    net, card = load_trained(sskt_run["run"].root)
    assert card_old == card
    x = sample_batch(card)
    with torch.inference_mode():
        assert torch.equal(net_old(x), net(x))


# --- issue 26: export loses nothing ----------------------------------------------------------------------------
def _export(run, out, *extra: str) -> list[str]:
    return ["export", str(run.root), "--format", "safetensors", "--out", str(out), *extra]


def test_export_refuses_an_existing_file_unless_forced(sskt_run, tmp_path, capsys) -> None:
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"precious")
    line = error_line(capsys, _export(sskt_run["run"], out))
    assert "already exists" in line and "--force" in line and out.read_bytes() == b"precious"
    assert main(_export(sskt_run["run"], out, "--force")) == 0
    assert load_file(out) and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_a_failed_parity_check_keeps_the_file_that_was_there(sskt_run, tmp_path, monkeypatch, capsys) -> None:
    """The export goes to a temporary file; a failed check removes only that, never the file --force would have
    replaced."""
    import sskt.inference as inference

    real = inference.EXPORTERS["torchscript"]
    monkeypatch.setitem(inference.EXPORTERS, "torchscript", lambda *a: real(*a) + 1e-3)
    out = tmp_path / "model.pt"
    out.write_bytes(b"the previous export")
    argv = ["export", str(sskt_run["run"].root), "--format", "torchscript", "--out", str(out), "--force"]
    assert "differs from PyTorch" in error_line(capsys, argv)
    assert out.read_bytes() == b"the previous export" and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


@pytest.mark.parametrize("name", ["model.safetensors", "model.json", "config.yaml", "checkpoints/last.pt"])
def test_export_never_replaces_a_run_file_even_with_force(sskt_run, name, capsys) -> None:
    run = sskt_run["run"]
    target = run.root / name
    before = target.read_bytes() if target.exists() else None
    line = error_line(capsys, _export(run, target, "--force"))
    assert "run file" in line and name in line
    assert (target.read_bytes() if target.exists() else None) == before


def test_export_to_a_folder_an_empty_path_or_a_read_only_folder_is_one_line(sskt_run, tmp_path, capsys) -> None:
    assert "is a folder" in error_line(capsys, _export(sskt_run["run"], tmp_path))
    empty = ["export", str(sskt_run["run"].root), "--format", "onnx", "--out", ""]
    assert "--out is empty" in error_line(capsys, empty)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root ignores the mode
            assert "read-only" in error_line(capsys, _export(sskt_run["run"], locked / "m.safetensors"))
    finally:
        locked.chmod(0o700)


def test_a_network_with_nan_weights_neither_predicts_nor_exports(sskt_run, colour_folder, tmp_path, capsys) -> None:
    import shutil

    from safetensors.torch import save_file

    broken = tmp_path / "broken"
    shutil.copytree(sskt_run["run"].root, broken)
    state = load_file(broken / "model.safetensors")
    state["fc.weight"][0, 0] = float("nan")
    save_file(state, broken / "model.safetensors", metadata={"aux_classes": "{}"})
    image = next((colour_folder / "test" / "c0").glob("*.png"))
    assert "non-finite" in error_line(capsys, ["predict", str(broken), str(image)])
    assert "non-finite" in error_line(capsys, _export(RunDir(broken), tmp_path / "m.safetensors"))
    assert not (tmp_path / "m.safetensors").exists()
