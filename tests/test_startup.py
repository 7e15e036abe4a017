"""The CLI answers at once (issue 29): help and bad options never import torch, ``predict`` never imports the
training stack, and ``sskt --help`` costs a small fraction of ``import torch``, measured as a ratio in one run so
that a busy shared machine slows both sides alike."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_tiny_cfg

from sskt.cli import COMMANDS, EXPORT_FORMATS

SSKT = [sys.executable, "-m", "sskt"]

HEAVY = ("torch", "torchvision", "torchmetrics", "scipy", "timm", "onnx", "submitit", "matplotlib", "lightning_fabric")
"""Packages a command imports only when it does its work (torch itself included for help and errors)."""

TRAINING_STACK = tuple(name for name in HEAVY if name != "torch")
"""What ``sskt predict`` must not import: it needs torch, and nothing the engine or the report need."""

SLOW_HELP: dict[str, str] = {}
"""Commands whose help still imports a heavy package, and why; a new command does not join this list quietly."""


def _heavy_imports(code: str) -> dict:
    """Run ``code`` in a fresh interpreter and return what it printed as JSON (the heavy modules it loaded)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


HELP_PROBE = """
import contextlib, io, json, sys
from sskt.cli import main
loaded = {}
for argv in %r:
    before = set(sys.modules)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
    loaded[" ".join(argv)] = sorted({m.split(".")[0] for m in set(sys.modules) - before} & set(%r))
print(json.dumps(loaded))
"""
"""Runs each command line in one interpreter and prints the heavy packages each one loaded first (a package an
earlier line loaded is charged to that line, so any offender shows)."""


def test_help_and_bad_options_import_no_heavy_package() -> None:
    argvs = [["--help"], *([name, "--help"] for name in COMMANDS if name not in SLOW_HELP)]
    argvs += [["train", "--no_such_option", "1"], ["predict", "--no_such_option"], ["list", "colours"], ["trian"]]
    loaded = _heavy_imports(HELP_PROBE % (argvs, HEAVY))
    assert not {line: heavy for line, heavy in loaded.items() if heavy}


@pytest.fixture(scope="module")
def tiny_run(small_fmnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch ResNet20 run to predict with, and one 28 px image."""
    from PIL import Image

    from sskt.engine import train

    out = tmp_path_factory.mktemp("startup")
    cfg = make_tiny_cfg(small_fmnist, out / "run")
    cfg.epochs = 1
    train(cfg)
    Image.new("L", (28, 28), 128).save(out / "one.png")
    return out


def test_predict_imports_torch_but_not_the_training_stack(tiny_run: Path) -> None:
    code = (
        "import json, sys; from sskt.cli import main\n"
        f"assert main(['predict', {str(tiny_run / 'run')!r}, {str(tiny_run / 'one.png')!r}]) == 0\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({TRAINING_STACK!r}))))"
    )
    assert _heavy_imports(code) == []


def test_export_formats_spelled_out_in_the_cli_are_the_exporters() -> None:
    from sskt.inference import EXPORTERS

    assert tuple(EXPORTERS) == EXPORT_FORMATS


def test_listed_imagenet_v1_sources_are_those_whose_default_differs() -> None:
    """zoo registers '<arch>.imagenet_v1' from a spelled-out list, so that importing sources skips torchvision."""
    from sskt.sources.zoo import LISTED_NEWER_DEFAULT, LISTED_TORCHVISION, torchvision_weights

    newer = tuple(a for a in LISTED_TORCHVISION if torchvision_weights(a).name != "IMAGENET1K_V1")
    assert newer == LISTED_NEWER_DEFAULT


def _seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, capture_output=True, timeout=300)
    return time.perf_counter() - start


def test_help_costs_a_fraction_of_importing_torch() -> None:
    """Medians of interleaved runs: what ``sskt --help``, ``sskt train --help`` and a bad option cost above a bare
    interpreter, against what ``import torch`` costs above it. Measured about 0.05 (help) and 0.15 (train's help,
    which builds the full parser) on the 2-core machine under load; 0.5 leaves room for noise, and importing torch
    anywhere on these paths would take the ratio past 1."""
    runs = {
        "python": [sys.executable, "-c", "import sys"],
        "torch": [sys.executable, "-c", "import torch"],
        "help": [*SSKT, "--help"],
        "train help": [*SSKT, "train", "--help"],
        "bad option": [*SSKT, "train", "--no_such_option", "1"],
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(5):
        for name, argv in runs.items():
            times[name].append(_seconds(argv))
    median = {name: statistics.median(t) for name, t in times.items()}
    torch_cost = median["torch"] - median["python"]
    ratios = {name: (median[name] - median["python"]) / torch_cost for name in ("help", "train help", "bad option")}
    assert all(r < 0.5 for r in ratios.values()), (ratios, median)


def test_an_extra_is_installed_into_the_environment_that_runs_sskt(monkeypatch) -> None:
    """From the checkout's top, after ``make demo``: ``.venv/bin/pip install -e '.[onnx]'``, not a bare ``pip``."""
    from sskt.errors import install_hint

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    pip = Path(sys.executable).parent / "pip"
    shown = pip.relative_to(repo) if pip.is_relative_to(repo) else pip
    assert install_hint("onnx") == f"{shown} install -e '.[onnx]'"


def test_no_error_names_a_bare_pip() -> None:
    """Every extra the CLI asks for goes through ``install_hint``: a hard-coded ``pip install 'sskt[x]'`` would target
    whichever pip is first on PATH."""
    src = Path(__file__).resolve().parents[1] / "src" / "sskt"
    bare = [f.relative_to(src) for f in src.rglob("*.py") if "pip install" in f.read_text() and f.name != "errors.py"]
    assert not bare
