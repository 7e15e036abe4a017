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
from sskt.inference import collect_images, preprocess, read_image, sample_batch
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
    import sskt.checkpoint_source as checkpoint

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


# --- issue 26, items 12-15: a trained model is input too --------------------------------------------------------
def _copy_run(sskt_run, tmp_path, **card_changes) -> str:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(sskt_run["run"].root, run)
    card = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**card, **card_changes}))
    return str(run)


def _one_image(colour_folder) -> str:
    return str(next((colour_folder / "test" / "c0").glob("*.png")))


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"input_size": 0}, "input_size"),
        ({"input_size": -3}, "input_size"),
        ({"input_size": 100000}, "input_size"),
        ({"num_classes": "10"}, "num_classes"),
        ({"num_classes": 1e12}, "num_classes"),
        ({"class_names": ["a", "b", "c"]}, "class_names"),
        ({"class_names": "c0c1c2c3"}, "class_names"),
        ({"task": "regression"}, "task"),
        ({"stored_size": [100000, 100000]}, "stored_size"),
        ({"format": 0}, "format"),
        ({"std": [0, 1, 1]}, "std"),
        ({"channels": 2}, "channels"),
    ],
)
def test_a_card_outside_its_schema_is_one_line_naming_the_field(
    sskt_run, colour_folder, tmp_path, capsys, changes, field
):
    run = _copy_run(sskt_run, tmp_path, **changes)
    line = error_line(capsys, ["predict", run, _one_image(colour_folder)])
    assert f"{field} " in line and "must be" in line
    assert field in error_line(capsys, ["export", run, "--format", "safetensors", "--out", str(tmp_path / "m")])


def test_a_card_from_a_newer_sskt_is_refused(sskt_run, colour_folder, tmp_path, capsys) -> None:
    run = _copy_run(sskt_run, tmp_path, format=99)
    assert "card format 99" in error_line(capsys, ["predict", run, _one_image(colour_folder)])


def test_class_names_with_control_characters_are_escaped_in_text_output(sskt_run, colour_folder, tmp_path, capsys):
    forged = "c0\nforged.png: c3 1.000\x1b[2K"
    run = _copy_run(sskt_run, tmp_path, class_names=[forged, forged, forged, forged])
    assert main(["predict", run, _one_image(colour_folder), "--topk", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "\x1b" not in out and "\\n" in out and "\\x1b" in out
    assert main(["predict", run, _one_image(colour_folder), "--topk", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top"][0]["class"] == forged


@pytest.mark.parametrize("source", ["checkpoint:/etc", "own", "url"])
def test_a_card_source_outside_its_run_is_not_followed(sskt_run, colour_folder, tmp_path, capsys, source) -> None:
    run = _copy_run(sskt_run, tmp_path)
    spec = {"checkpoint:/etc": {"name": "checkpoint:/etc"}, "own": {"name": f"checkpoint:{run}"}}.get(
        source, {"name": "efficientnet_lite0.imagenet", "weights": "https://example.invalid/w.pth"}
    )
    card = json.loads((tmp_path / "copy" / "model.json").read_text())
    (tmp_path / "copy" / "model.json").write_text(json.dumps({**card, "architecture": "probe", "source": spec}))
    line = error_line(capsys, ["predict", run, _one_image(colour_folder)])
    assert "outside the run directory" in line and "--trust_sources" in line


def test_a_probe_card_naming_its_own_run_does_not_recurse_even_when_trusted(sskt_run, colour_folder, tmp_path, capsys):
    run = _copy_run(sskt_run, tmp_path)
    card = json.loads((tmp_path / "copy" / "model.json").read_text())
    own = {**card, "architecture": "probe", "source": {"name": f"checkpoint:{run}"}}
    (tmp_path / "copy" / "model.json").write_text(json.dumps(own))
    line = error_line(capsys, ["predict", run, _one_image(colour_folder), "--trust_sources"])
    assert "nest" in line


def test_an_image_over_the_pixel_limit_is_one_error_line_and_the_others_run(sskt_run, colour_folder, capsys) -> None:
    images = sorted((colour_folder / "test" / "c0").glob("*.png"))[:2]
    status = main(["predict", str(sskt_run["run"].root), *map(str, images), "--max_pixels", "100", "--json"])
    out, err = capsys.readouterr()
    assert status == 2 and len(err.strip().splitlines()) == 2 and "over the limit of 100" in err
    assert "Traceback" not in err and out == ""
    assert main(["predict", str(sskt_run["run"].root), *map(str, images), "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_a_16_bit_png_is_scaled_by_its_range_not_clipped_to_white(sskt_run, tmp_path) -> None:
    import numpy as np
    from PIL import Image

    from sskt.data.folder import decode_image

    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((16, 16), 32768, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    _, card = load_trained(sskt_run["run"].root)
    assert read_image(path, card).float().mean().item() == pytest.approx(128, abs=1)
    assert decode_image(path, (16, 16)).float().mean().item() == pytest.approx(128, abs=1)


def test_predict_on_many_images_shows_a_progress_bar_on_a_terminal(sskt_run, colour_folder, monkeypatch) -> None:
    """Issue 26, item 17: a bar on stderr from PROGRESS_FROM images on, only on a terminal; stdout keeps its lines."""
    from sskt import inference

    monkeypatch.setattr(inference.sys.stderr, "isatty", lambda: True)
    assert not inference.progress_bar(inference.PROGRESS_FROM).disable
    assert inference.progress_bar(inference.PROGRESS_FROM - 1).disable
    monkeypatch.setattr(inference.sys.stderr, "isatty", lambda: False)
    assert inference.progress_bar(10 * inference.PROGRESS_FROM).disable, "a pipe or a log file gets no bar"
    real, bars = inference.progress_bar, []
    monkeypatch.setattr(inference, "progress_bar", lambda n: bars.append(real(n)) or bars[-1])
    net, card = load_trained(sskt_run["run"].root)
    files = collect_images([str(colour_folder / "test")])
    assert len(list(inference.predict(files, net, card, batch_size=3))) == len(files)
    assert bars[0].tasks[0].completed == len(files) == bars[0].tasks[0].total
