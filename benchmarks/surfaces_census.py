"""Census of issue 26: every case of the new surfaces (export, predict, model cards, folders, caches, several
processes), plus the earlier census's cases, each run as a real process under a timeout and judged automatically.

    .venv/bin/python benchmarks/surfaces_census.py [--json benchmarks/results/surfaces_census.json] [--only TEXT]

Each case reports its exit status, whether a traceback appeared, whether the result was right (the expected one
line, or the expected result), and for data-loss cases whether the files it must keep are byte-identical after.
Totals: tracebacks, silently wrong results (exit 0 and wrong), hangs (the per-case timeout hit), crashes (killed by
a signal or no message), data-loss paths. A case marked "injected" runs the real CLI in a real process with one
fault injected (a function replaced before ``sskt.cli.main`` runs) where no real fault can be made on demand. Disk
full and read-only folders are real: small tmpfs mounts (root only; skipped otherwise). The data is the tiny
Fashion-MNIST cut and the colour folder of ``tests/conftest.py``, VOC and UCF trees of ``tests/test_voc.py`` and
``tests/test_video.py``; the runs they need are trained once and reused.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO / "tests")]

import bad_input_census as earlier  # noqa: E402
from conftest import COLOURS, FMNIST, _write_idx, write_small_fmnist  # noqa: E402
from test_video import write_ucf  # noqa: E402
from test_voc import write_voc  # noqa: E402

PY = sys.executable
TIMEOUT = 180.0
"""Seconds a case may take before it counts as a hang (several-process cases get more)."""

INJECT = {
    "parity": "import sskt.inference as m\nr = m.EXPORTERS['torchscript']\n"
    "m.EXPORTERS['torchscript'] = lambda *a: r(*a) + 1e-3",
    "nan_at_step_6": "import dataclasses\nfrom sskt.methods.base import Method\nreal, n = Method.training_step, []\n"
    "def step(self, batch):\n    out = real(self, batch); n.append(1)\n"
    "    return dataclasses.replace(out, loss=out.loss * float('nan')) if len(n) >= 6 else out\n"
    "Method.training_step = step",
    "record_enospc_at_epoch_2": "import builtins, errno\nreal, n = builtins.open, []\n"
    "def full(file, mode='r', *a, **k):\n"
    "    if str(file).endswith('records.jsonl') and 'a' in mode:\n        n.append(1)\n"
    "        if len(n) >= 2: raise OSError(errno.ENOSPC, 'No space left on device')\n"
    "    return real(file, mode, *a, **k)\nbuiltins.open = full",
    "torch_save_torn_at_2": "import torch\nreal, n = torch.save, []\n"
    "def torn(obj, f, *a, **k):\n    n.append(1)\n    if len(n) >= 2:\n"
    "        raise RuntimeError('[enforce fail at inline_container.cc:664] . unexpected pos 576 vs 470')\n"
    "    return real(obj, f, *a, **k)\ntorch.save = torn",
}
WRAP = "import sys\n{inject}\nfrom sskt.cli import main\nsys.exit(main(sys.argv[1:]))"


@dataclass
class Proc:
    rc: int | None
    out: str
    err: str
    seconds: float
    timed_out: bool
    command: list[str] = field(default_factory=list)

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.err

    def lines(self, prefix: str) -> list[str]:
        return [x for x in self.err.splitlines() if x.startswith(prefix)]


def start(cmd: list[str], **kw) -> subprocess.Popen:
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, text=True, start_new_session=True, **kw)


def finish(proc: subprocess.Popen, cmd: list[str], t0: float, timeout: float) -> Proc:
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        timed_out = True
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of the case outlives it (its process group)
    return Proc(None if timed_out else proc.returncode, out or "", err or "", time.monotonic() - t0, timed_out, cmd)


def sskt_cmd(argv: list[str], inject: str | None = None) -> list[str]:
    if inject:
        return [PY, "-c", WRAP.format(inject=INJECT[inject]), *argv]
    return [PY, "-m", "sskt", *argv]


def sskt(argv: list[str], inject: str | None = None, timeout: float = TIMEOUT, cwd: Path | None = None) -> Proc:
    cmd = sskt_cmd([str(a) for a in argv], inject)
    t0 = time.monotonic()
    return finish(start(cmd, cwd=cwd), cmd, t0, timeout)


def python(code: str, timeout: float = TIMEOUT) -> Proc:
    cmd = [PY, "-c", code]
    t0 = time.monotonic()
    return finish(start(cmd, cwd=REPO / "tests"), cmd, t0, timeout)


def as_json(text: str) -> dict:
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def digest(path: Path) -> dict[str, str]:
    """Path -> sha256 of every file under ``path`` (or of ``path``), to compare before and after."""
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def cells(out: Path) -> dict[str, str]:
    """``digest`` of the files inside a grid's cell folders."""
    return {k: v for k, v in digest(out).items() if "/" in k}


# --- the census ------------------------------------------------------------------------------------------------
class Census:
    def __init__(self, only: str | None) -> None:
        self.rows: dict[str, dict] = {}
        self.only = only

    def wanted(self, name: str) -> bool:
        return self.only is None or self.only.lower() in name.lower()

    def add(self, name: str, item: str, kind: str, p: Proc | None, right: bool, why: str = "",
            kept: bool | None = None, skipped: str | None = None) -> None:  # fmt: skip
        """``kind``: what the issue found (data loss, hang, crash, silently wrong, traceback, earlier census);
        ``kept``: for data-loss cases, whether the files that must stay are byte-identical after."""
        row = {"item": item, "kind": kind}
        if skipped:
            row |= {"skipped": skipped, "right": None}
        else:
            crashed = p.rc is not None and (p.rc < 0 or p.rc > 128 and p.rc != 130)
            row |= {"exit": p.rc, "traceback": p.traceback, "hang": p.timed_out, "crash": crashed, "right": right}
            row |= {"kept": kept, "seconds": round(p.seconds, 1), "why": why}
            row |= {"message": (p.err.strip().splitlines() or [""])[-1][:300], "command": " ".join(p.command)[-600:]}
            if not right or p.traceback:
                row["stderr_tail"] = p.err[-1500:]
                row["stdout_tail"] = p.out[-500:]
        self.rows[name] = row
        state = "SKIP" if skipped else ("ok" if right and not row["traceback"] else "FAIL")
        info = skipped or f"exit {row['exit']}  tb {row['traceback']!s:5}  {row['seconds']:6.1f}s  {why}"
        print(f"{state:4}  [{item}] {name}: {info}", flush=True)

    def one_line(self, name: str, item: str, kind: str, p: Proc, *expected: str, status: int = 2,
                 prefix: str = "error:", keep: tuple[dict, Callable[[], dict]] | None = None,
                 extra: tuple[bool, str] = (True, "")) -> None:  # fmt: skip
        """Right: exit ``status``, exactly one ``prefix`` line holding each of ``expected``, no traceback, and
        (``keep``) the files compared byte-identical after, and ``extra`` true."""
        lines = p.lines(prefix)
        why = []
        if p.rc != status:
            why.append(f"exit {p.rc}, wanted {status}")
        if len(lines) != 1:
            why.append(f"{len(lines)} '{prefix}' lines")
        missing = [e for e in expected if not any(e in x for x in lines)]
        if missing:
            why.append(f"line lacks {missing}")
        kept = None
        if keep is not None:
            kept = keep[0] == keep[1]()
            if not kept:
                why.append("files changed")
        if not extra[0]:
            why.append(extra[1])
        self.add(name, item, kind, p, not why and not p.traceback and not p.timed_out, "; ".join(why), kept)


def mount_tmpfs(where: Path, size: str, ro: bool = False) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True).returncode == 0
    )


def fill(where: Path, leave: int = 0) -> None:
    """Write a filler file into ``where`` until the filesystem has at most ``leave`` bytes free."""
    with open(where / "filler", "wb") as f:
        try:
            while True:
                free = os.statvfs(where).f_bavail * os.statvfs(where).f_frsize
                if free <= leave:
                    break
                f.write(b"\0" * min(65536, max(4096, free - leave)))
                f.flush()
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise


# --- data ------------------------------------------------------------------------------------------------------
def swap_fmnist_labels(root: Path) -> None:
    from sskt.data.datasets import read_idx

    path = root / "train-labels-idx1-ubyte.gz"
    _write_idx(path, (read_idx(path).long() + 1) % 10)


def colour_folder(root: Path, per_class: tuple[int, int] = (24, 10)) -> Path:
    gen = np.random.default_rng(0)
    for split, count in zip(("train", "test"), per_class, strict=True):
        for c, colour in enumerate(COLOURS):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + gen.integers(-60, 61, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f"c{c}" / f"{i}.png")
    return root


def big_png(path: Path, side: int = 20000) -> None:
    """A valid greyscale PNG of side x side pixels (400 M for 20000), written by streaming compressed rows."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp, row, parts = zlib.compressobj(9), b"\0" * (side + 1), []
    for _ in range(side):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    )


# --- the runs the cases reuse ----------------------------------------------------------------------------------
def fm_train(data: Path, out: Path, *extra) -> list:
    """test_resume_inputs' tiny Fashion-MNIST run: 40 labelled images, batch 20, 2 epochs."""
    argv = ["train", "--data.root", data, "--data.download", "false", "--data.labels_per_class", "4"]
    argv += ["--data.batch_size", "20", "--epochs", "2", "--optim.schedule", "constant", "--accelerator", "cpu"]
    return [*argv, "--progress", "false", "--out", out, *extra]


def col_train(root: Path, out: Path, *extra) -> list:
    argv = ["train", "--data.name", "imagefolder", "--data.root", root, "--data.image_size", "16", "--epochs", "1"]
    argv += ["--data.batch_size", "16", "--optim.lr", "0.05", "--accelerator", "cpu", "--progress", "false"]
    return [*argv, "--out", out, *extra]


def voc_train(root: Path, out: Path, *extra) -> list:
    argv = ["train", "--data.name", "voc2007", "--data.root", root, "--data.download", "false"]
    argv += ["--data.image_size", "32", "--data.batch_size", "8", "--method.primary_loss", "bce", "--epochs", "1"]
    return [*argv, "--accelerator", "cpu", "--progress", "false", "--out", out, *extra]


def ucf_train(root: Path, out: Path, *extra) -> list:
    argv = ["train", "--data.name", "ucf101", "--data.root", root, "--data.download", "false"]
    argv += ["--data.image_size", "32", "--data.clip_len", "8", "--data.batch_size", "3", "--data.augment", "clip"]
    argv += ["--model.name", "resnet3d_18", "--optim.lr", "0.01", "--epochs", "1", "--accelerator", "cpu"]
    return [*argv, "--progress", "false", "--out", out, *extra]


def needs(c: Census, p: Proc, what: str) -> bool:
    """A set-up step: when it fails, say so (as a failing case) and let the cases that need it be skipped."""
    if p.rc == 0:
        return True
    c.add(f"set-up: {what}", "set-up", "set-up", p, False, f"set-up failed (exit {p.rc})")
    return False


# --- the cases -------------------------------------------------------------------------------------------------
def earlier_cases(c: Census, tmp: Path) -> None:
    """The 32 cases of bad_input_census.py (its case list, run here under the timeout)."""
    folder = tmp / "earlier"
    folder.mkdir()
    for name, argv, out in earlier.cases(folder):
        if not c.wanted(name):
            continue
        p = sskt(argv)
        wrote = out is not None and out.exists()
        c.one_line(name, "earlier", "earlier census", p, extra=(not wrote, "wrote its --out"))
    for name, after in (("Ctrl-C during training", 20.0), ("Ctrl-C while modules load", 0.4)):
        if c.wanted(name):
            interrupt(c, name, "earlier", after, tmp, FMNIST)


def interrupt(c: Census, name: str, item: str, after: float, tmp: Path, data: Path) -> None:
    out = tmp / f"run_interrupted_{after}"
    cmd = sskt_cmd(["train", "--data.root", str(data), "--epochs", "50", "--progress", "false", "--out", str(out)])
    t0 = time.monotonic()
    proc = start(cmd)
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    p = finish(proc, cmd, t0, TIMEOUT)
    ok = p.err.startswith("interrupted: ")
    c.one_line(name, item, "traceback", p, status=130, prefix="interrupted:",
               extra=(ok, "stderr does not start with the interrupted: line"))  # fmt: skip


def export_cases(c: Census, tmp: Path, run: Path, video_run: Path | None) -> None:
    item = "1 export"
    where = tmp / "exports"
    where.mkdir()

    def export(out, *extra, fmt="safetensors", inject=None):
        return sskt(["export", run, "--format", fmt, "--out", out, *extra], inject=inject)

    target = where / "a" / "model.safetensors"
    target.parent.mkdir()
    target.write_bytes(b"precious")
    name = "export onto an existing file without --force"
    if c.wanted(name):
        before = digest(target.parent)
        c.one_line(name, item, "data loss", export(target), "already exists", "--force",
                   keep=(before, lambda: digest(target.parent)))  # fmt: skip
    name = "export --force replaces it through a temporary file"
    if c.wanted(name):
        p = export(target, "--force")
        names = sorted(x.name for x in target.parent.iterdir())
        right = p.rc == 0 and target.read_bytes() != b"precious" and target.stat().st_size > 1000
        right = right and names == ["model.safetensors"] and as_json(p.out).get("max_abs_diff", 1) <= 1e-4
        c.add(name, item, "data loss", p, right and not p.traceback, "" if right else f"exit {p.rc}, folder {names}")
    name = "a failed parity check keeps the file that was there (injected +1e-3)"
    if c.wanted(name):
        old = where / "b" / "model.pt"
        old.parent.mkdir()
        old.write_bytes(b"the previous export")
        before = digest(old.parent)
        p = export(old, "--force", fmt="torchscript", inject="parity")
        c.one_line(name, item, "data loss", p, "differs from PyTorch", keep=(before, lambda: digest(old.parent)))
    for fmt, file, force in (("onnx", "model.safetensors", ()), ("onnx", "model.safetensors", ("--force",)),
                             ("safetensors", "config.yaml", ("--force",)),
                             ("safetensors", "checkpoints/last.pt", ("--force",)),
                             ("safetensors", "model.json", ("--force",))):  # fmt: skip
        name = f"export RUN --format {fmt} --out RUN/{file} {' '.join(force)}".strip()
        if c.wanted(name):
            before = digest(run)
            p = export(run / file, *force, fmt=fmt)
            c.one_line(name, item, "data loss", p, "run file", keep=(before, lambda: digest(run)))
    item = "17 export"
    cases = [("export to a folder", where, "is a folder"), ("export --out ''", "", "--out is empty")]
    ro = tmp / "ro_export"
    if mount_tmpfs(ro, "1m", ro=True):
        cases.append(("export into a read-only folder (ro tmpfs)", ro / "m.safetensors", "read-only"))
    else:
        c.add("export into a read-only folder", item, "traceback", None, False, skipped="cannot mount a tmpfs")
    for name, out, expected in cases:
        if c.wanted(name):
            c.one_line(name, item, "traceback", export(out), expected)
    name = "export of a video run"
    if c.wanted(name):
        if video_run is None:
            c.add(name, item, "traceback", None, False, skipped="the video run did not train")
        else:
            p = sskt(["export", video_run, "--format", "onnx", "--out", where / "video.onnx"])
            c.one_line(name, item, "traceback", p, "video model", extra=(not (where / "video.onnx").exists(), "wrote"))


def nan_cases(c: Census, tmp: Path, run: Path, image: Path, data: Path) -> None:
    from safetensors.torch import load_file, save_file

    item = "9 NaN"
    broken = tmp / "nan_run"
    shutil.copytree(run, broken)
    state = load_file(broken / "model.safetensors")
    state["fc.weight"][0, 0] = float("nan")
    save_file(state, broken / "model.safetensors", metadata={"aux_classes": "{}"})
    name = "predict with NaN weights"
    if c.wanted(name):
        c.one_line(name, item, "silently wrong", sskt(["predict", broken, image]), "non-finite")
    name = "export with NaN weights"
    if c.wanted(name):
        out = tmp / "nan_export.safetensors"
        p = sskt(["export", broken, "--format", "safetensors", "--out", out])
        c.one_line(name, item, "silently wrong", p, "non-finite", extra=(not out.exists(), "the export was written"))
    name = "a diverging learning rate (--optim.lr 1e30) stops without a result"
    if c.wanted(name):
        out = tmp / "nan_lr"
        p = sskt(fm_train(data, out, "--optim.lr", "1e30", "--epochs", "1", "--data.labels_per_class", "20",
                          "--data.batch_size", "50"))  # fmt: skip
        no_result = not (out / "summary.json").exists() and not (out / "model.safetensors").exists()
        c.one_line(name, item, "silently wrong", p, "training loss became", "epoch 1, step",
                   extra=(no_result, "a summary or model was written"))  # fmt: skip
    name = "a NaN loss at epoch 2 step 2 keeps epoch 1 (injected)"
    if c.wanted(name):
        out = tmp / "nan_step"
        argv = fm_train(data, out, "--epochs", "3", "--data.labels_per_class", "20", "--data.batch_size", "50")
        p = sskt(argv, inject="nan_at_step_6")
        records = (out / "records.jsonl").read_text().splitlines() if (out / "records.jsonl").exists() else []
        good = [json.loads(x)["epoch"] for x in records] == [1] and not (out / "summary.json").exists()
        good = good and checkpoint_epoch(out / "checkpoints" / "last.pt") == 1
        c.one_line(name, item, "silently wrong", p, "at epoch 2, step 2", "keeps epoch 1",
                   extra=(good, "records, checkpoint or summary not as the last good epoch"))  # fmt: skip


def checkpoint_epoch(path: Path) -> int | None:
    if not path.exists():
        return None
    p = python(f"import torch; print(torch.load({str(path)!r}, weights_only=True, map_location='cpu')['epoch'])")
    return int(p.out.strip()) if p.rc == 0 else None


def resume_cases(c: Census, tmp: Path, runs: dict, data: Path, col: Path, voc: Path | None, ucf: Path | None) -> None:
    item = "2 resume"

    def refused(name: str, out: Path, argv: list, *expected: str) -> None:
        if not c.wanted(name):
            return
        files = ("config.yaml", "records.jsonl", "checkpoints/last.pt")
        before = {f: digest(out / f) for f in files}
        c.one_line(name, item, "data loss", sskt(argv), *expected,
                   keep=(before, lambda: {f: digest(out / f) for f in files}))  # fmt: skip

    other = tmp / "col_swapped"
    shutil.copytree(col, other)
    for split in ("train", "test"):
        (other / split / "c0").rename(other / split / "tmp")
        (other / split / "c1").rename(other / split / "c0")
        (other / split / "tmp").rename(other / split / "c1")
    run = runs["col"]
    refused("resume an image-folder run on another folder (labels swapped)", run,
            col_train(other, run, "--resume", "true", "--epochs", "2"), "the train data")  # fmt: skip
    run = runs["fm"]
    name = "resume a Fashion-MNIST run whose folder was relabelled in place"
    if c.wanted(name):
        labels = data / "train-labels-idx1-ubyte.gz"
        keep = labels.read_bytes()
        swap_fmnist_labels(data)
        try:
            refused(name, run, fm_train(data, run, "--resume", "true", "--epochs", "3"), "the train data")
        finally:
            labels.write_bytes(keep)
    if voc is not None:
        other = tmp / "voc_other"
        shutil.copytree(voc, other)
        ann = other / "VOCdevkit" / "VOC2007" / "Annotations"
        for xml in sorted(ann.glob("tr*.xml"))[:4]:
            xml.write_text(xml.read_text().replace("person", "XX").replace("dog", "person").replace("XX", "dog"))
        refused("resume a VOC run on another root (labels changed)", runs["voc"],
                voc_train(other, runs["voc"], "--resume", "true", "--epochs", "2"), "the train data")  # fmt: skip
    else:
        c.add("resume a VOC run on another root", item, "data loss", None, False, skipped="the VOC run did not train")
    if ucf is not None:
        other = tmp / "ucf_other"
        shutil.copytree(ucf, other)
        lines = (other / "splits" / "trainlist01.txt").read_text().splitlines()
        swapped = [x[:-1] + {"1": "2", "2": "1"}[x[-1]] for x in lines if x]
        (other / "splits" / "trainlist01.txt").write_text("\n".join(swapped) + "\n")
        refused("resume a UCF101 run on another root (labels swapped)", runs["ucf"],
                ucf_train(other, runs["ucf"], "--resume", "true", "--epochs", "2"), "the train data")  # fmt: skip
    else:
        c.add(
            "resume a UCF101 run on another root", item, "data loss", None, False, skipped="the UCF run did not train"
        )
    if runs.get("kd"):
        teacher = runs["teacher"]
        shutil.copy(runs["fm2"] / "model.safetensors", teacher / "model.safetensors")
        kd = ["--method.name", "kd", "--method.kd.teacher", f"checkpoint:{teacher}"]
        refused(
            "resume a KD run whose teacher's weights were swapped",
            runs["kd"],
            fm_train(data, runs["kd"], *kd, "--resume", "true", "--epochs", "3"),
            "frozen network 'kd_teacher'",
        )
    name = "resume through a symlinked, relative data path (same content) continues"
    if c.wanted(name):
        (tmp / "data_link").symlink_to(data)
        p = sskt(fm_train(Path("data_link"), run, "--resume", "true", "--epochs", "3"), cwd=tmp)
        epochs = [json.loads(x)["epoch"] for x in (run / "records.jsonl").read_text().splitlines()]
        right = p.rc == 0 and epochs == [1, 2, 3]
        c.add(name, item, "silently wrong", p, right and not p.traceback, "" if right else f"exit {p.rc}, {epochs}")
    name = "--resume true on a finished run whose checkpoints/ was deleted"
    if c.wanted(name):
        run = runs["fm2"]
        shutil.rmtree(run / "checkpoints")
        before = digest(run)
        p = sskt(fm_train(data, run, "--seed", "5", "--resume", "true"))
        c.one_line(name, "3 resume", "data loss", p, "finished", "checkpoints/last.pt is missing",
                   keep=(before, lambda: digest(run)))  # fmt: skip


def grid_cases(c: Census, tmp: Path, data: Path) -> None:
    """(Files compared: those inside the cell folders; the grid's own files at the top may change.)"""
    item = "2 grid drift"
    gdata = tmp / "grid_data"
    shutil.copytree(data, gdata)

    def grid(root: Path) -> Path:
        base = {"epochs": 1, "data.root": str(root), "data.download": False, "data.labels_per_class": 4}
        base |= {"data.batch_size": 20, "accelerator": "cpu", "optim.schedule": "constant", "progress": False}
        path = tmp / f"grid_{root.name}.yaml"
        path.write_text(yaml.safe_dump({"base": [base], "axes": {"optim.lr": [0.05]}, "seeds": [0]}, sort_keys=False))
        return path

    out = tmp / "grid_runs"
    p = sskt(["grid", "--config", grid(gdata), "--out", out, "--threads", "1"], timeout=300)
    if not needs(c, p, "a one-cell grid"):
        return
    name = "a grid rerun with unchanged data skips its finished cell"
    if c.wanted(name):
        before = cells(out)
        p = sskt(["grid", "--config", grid(gdata), "--out", out, "--threads", "1"])
        c.add(name, item, "silently wrong", p, p.rc == 0 and cells(out) == before and not p.traceback,
              f"exit {p.rc}")  # fmt: skip
    other = tmp / "grid_other"
    shutil.copytree(gdata, other)
    swap_fmnist_labels(other)
    for name, root in (("a grid whose data.root now names another folder (other labels)", other),
                       ("a grid whose data changed under the same root", gdata)):  # fmt: skip
        if not c.wanted(name):
            continue
        if root == gdata:
            swap_fmnist_labels(gdata)
        before = cells(out)
        p = sskt(["grid", "--config", grid(root), "--out", out, "--threads", "1"])
        c.one_line(name, item, "data loss", p, "ran with other settings", "the train data",
                   keep=(before, lambda: cells(out)))  # fmt: skip


def folder_cases(c: Census, tmp: Path, run: Path) -> None:
    item = "4 folder walks"
    root = tmp / "walk"
    earlier._folder(root)
    (root / "train" / "a" / "loop").symlink_to(root / "train")
    (root / "train" / "a" / "up").symlink_to(root / "train" / "a")
    os.mkfifo(root / "train" / "b" / "x.png")
    name = "an image folder with symlink loops and a FIFO counts each image once"
    if c.wanted(name):
        code = ("from sskt.config import DataConfig; from sskt.data import build_dataset\n"
                f"s = build_dataset(DataConfig(name='imagefolder', root={str(root)!r}, image_size=8))\n"
                "print(len(s.train), len(s.test))")  # fmt: skip
        p = python(code, timeout=120)
        right = p.rc == 0 and p.out.split() == ["6", "6"]
        c.add(name, item, "silently wrong", p, right, "" if right else f"counted {p.out.split()}, wanted 6 6")
    name = "training on a folder with symlink loops and a FIFO finishes"
    if c.wanted(name):
        p = sskt(["train", "--data.name", "imagefolder", "--data.root", root, "--data.image_size", "8", "--epochs", "1",
                  "--progress", "false", "--out", tmp / "walk_run"], timeout=240)  # fmt: skip
        right = p.rc == 0 and "skipped under" in p.err
        c.add(name, item, "hang", p, right and not p.traceback, "" if right else f"exit {p.rc}")
    pred = tmp / "p"
    (pred / "x").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(pred / "x" / f"{i}.png")
    (pred / "x" / "l1").symlink_to(pred)
    (pred / "l2").symlink_to(pred / "x")
    os.mkfifo(pred / "f.jpg")
    name = "predict on a folder with two symlink loops and a FIFO"
    if c.wanted(name):
        p = sskt(["predict", run, pred, "--json"], timeout=120)
        n = len(p.out.splitlines())
        c.add(name, item, "hang", p, p.rc == 0 and n == 2 and not p.traceback, f"exit {p.rc}, {n} predictions (2)")
    name = "predict given a FIFO named x.png directly"
    if c.wanted(name):
        fifo = tmp / "x.png"
        os.mkfifo(fifo)
        p = sskt(["predict", run, fifo], timeout=120)
        right = p.rc == 2 and "x.png" in p.err and len(p.lines("error:")) == 1
        c.add(name, item, "hang", p, right and not p.traceback and not p.timed_out, f"exit {p.rc}")


def disk_cases(c: Census, tmp: Path, data: Path, teacher: Path | None) -> None:
    item = "5 disk full"
    sources = json.dumps([{"name": f"checkpoint:{teacher}"}]) if teacher else None
    cache = ["--method.name", "sskt", "--sources", sources, "--cache.enabled", "true", "--cache.views", "4"]
    full = tmp / "full_cache"
    if not mount_tmpfs(full, "256k"):
        for name in ("cache build on a full disk", "train --cache.enabled true on a full disk",
                     "a full disk between two checkpoints"):  # fmt: skip
            c.add(name, item, "crash", None, False, skipped="cannot mount a tmpfs (needs root)")
    elif sources is None:
        c.add("cache on a full disk", item, "crash", None, False, skipped="the teacher run did not train")
    else:
        fill(full, leave=12 * 1024)
        cfg = tmp / "cache_run.yaml"
        cfg.write_text(yaml.safe_dump({"data": {"root": str(data), "download": False, "labels_per_class": 50},
                                       "accelerator": "cpu", "progress": False}))  # fmt: skip
        name = "cache build on a full disk (real tmpfs, 12 KB free)"
        if c.wanted(name):
            p = sskt(["cache", "build", "--config", cfg, *cache, "--cache.dir", full / "c1"])
            c.one_line(name, item, "crash", p, "no space left")
        name = "train --cache.enabled true on a full disk (real tmpfs, 12 KB free)"
        if c.wanted(name):
            p = sskt(fm_train(data, tmp / "cache_full_run", *cache, "--data.labels_per_class", "50",
                              "--cache.dir", full / "c2"))  # fmt: skip
            c.one_line(name, item, "crash", p, "no space left")
        item17 = "17 cache.dir"
        (tmp / "cache_file").write_text("not a folder")
        name = "--cache.dir that is a file"
        if c.wanted(name):
            p = sskt(fm_train(data, tmp / "cache_file_run", *cache, "--cache.dir", tmp / "cache_file"))
            c.one_line(name, item17, "traceback", p, "cannot write the soft-label cache")
        ro = tmp / "ro_cache"
        name = "--cache.dir on a read-only file system (ro tmpfs)"
        if c.wanted(name) and mount_tmpfs(ro, "1m", ro=True):
            p = sskt(fm_train(data, tmp / "cache_ro_run", *cache, "--cache.dir", ro / "c"))
            c.one_line(name, item17, "traceback", p, "cannot write the soft-label cache")
    name = "a full disk between two checkpoints (real tmpfs filled after the first)"
    disk = tmp / "full_out"
    if c.wanted(name) and mount_tmpfs(disk, "16m"):
        out = disk / "run"
        argv = fm_train(data, out, "--epochs", "30", "--data.labels_per_class", "20", "--data.batch_size", "50")
        cmd = sskt_cmd([str(a) for a in argv])
        t0 = time.monotonic()
        proc = start(cmd)
        last = out / "checkpoints" / "last.pt"
        while not last.exists() and proc.poll() is None and time.monotonic() - t0 < TIMEOUT:
            time.sleep(0.02)
        fill(disk)
        kept = digest(last) if last.exists() else None
        p = finish(proc, cmd, t0, TIMEOUT)
        (disk / "filler").unlink(missing_ok=True)
        c.one_line(name, item, "traceback", p, "no space left", keep=(kept, lambda: digest(last)))
    for name, inject, expected in (
        ("ENOSPC appending the second record (injected)", "record_enospc_at_epoch_2", "records.jsonl"),
        ("torch.save's 'unexpected pos' at the second checkpoint (injected)", "torch_save_torn_at_2", "last.pt"),
    ):
        if not c.wanted(name):
            continue
        out = tmp / f"enospc_{inject}"
        p = sskt(fm_train(data, out, "--epochs", "3"), inject=inject)
        epoch = checkpoint_epoch(out / "checkpoints" / "last.pt")
        c.one_line(name, item, "traceback", p, "no space left", expected,
                   extra=(epoch == 1, f"last.pt holds epoch {epoch}, wanted 1"))  # fmt: skip


def ddp_cases(c: Census, tmp: Path, data: Path) -> None:
    item = "6 several processes"
    ddp = ["--epochs", "40", "--data.labels_per_class", "20", "--data.batch_size", "50", "--model.name",
           "timm:test_convnext", "--devices", "2", "--strategy", "ddp", "--threads", "1"]  # fmt: skip

    def launch(out: Path, *extra) -> tuple[subprocess.Popen, list, float]:
        cmd = sskt_cmd([str(a) for a in fm_train(data, out, *ddp, *extra)])
        t0 = time.monotonic()
        proc = start(cmd)
        while not (out / "records.jsonl").exists() and proc.poll() is None and time.monotonic() - t0 < 240:
            time.sleep(0.1)
        return proc, cmd, t0

    def child(pid: int) -> int | None:
        found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        return int(found[0]) if len(found) == 1 else None

    for name, how, timeout in (("one of 2 processes is killed (SIGKILL)", "kill", 300),
                               ("Ctrl-C of 2 processes (SIGINT to the group)", "int", 300),
                               ("one of 2 processes stops (SIGSTOP), --dist_timeout 30", "stop", 420)):  # fmt: skip
        if not c.wanted(name):
            continue
        extra = ("--dist_timeout", "30") if how == "stop" else ()
        proc, cmd, t0 = launch(tmp / f"ddp_{how}", *extra)
        if proc.poll() is not None:
            c.add(name, item, "traceback", finish(proc, cmd, t0, timeout), False, "ended before its first record")
            continue
        pid = child(proc.pid)
        if how == "int":
            os.killpg(proc.pid, signal.SIGINT)
        elif pid is not None:
            os.kill(pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        p = finish(proc, cmd, t0, timeout)
        if pid is not None and how == "stop":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if how == "int":
            c.one_line(name, item, "traceback", p, status=130, prefix="interrupted:")
        else:
            c.one_line(name, item, "traceback", p, "rank 1 of 2", extra=(pid is not None, "no single child found"))
    c.add("NCCL (GPU) processes", item, "traceback", None, False,
          skipped="no GPU here: NCCL needs CUDA devices; the gloo cases above stand in")  # fmt: skip
    name = "dist_timeout is an option with a default and documented"
    if c.wanted(name):
        p = sskt(["train", "--help"])
        doc = "dist_timeout" in (REPO / "docs" / "OPTIONS.md").read_text()
        right = p.rc == 0 and "--dist_timeout" in p.out and doc
        c.add(name, item, "hang", p, right, "" if right else "not in train --help or docs/OPTIONS.md")


def metric_cases(c: Census, tmp: Path, runs_dir: Path) -> None:
    item = "11 metrics"
    for name, module, test in (
        ("video metric: one clip per video (1-D labels) gives the clip accuracy", "test_video",
         "test_one_clip_per_video_gives_the_clip_accuracy"),
        ("video metric: ids beyond float32 precision stay apart", "test_video",
         "test_video_ids_beyond_float32_precision_stay_apart"),
        ("video metric under 2 processes (gloo) equals one process", "test_video",
         "test_one_clip_per_video_under_two_processes_matches_one_process"),
        ("VOC mAP leaves classes absent from the split out", "test_voc",
         "test_classes_absent_from_the_split_are_left_out_of_the_map"),
        ("VOC headline mAP follows the protocol beside the policy's", "test_voc",
         "test_the_headline_map_follows_the_voc_protocol_beside_the_policy"),
    ):  # fmt: skip
        if not c.wanted(name):
            continue
        folder = tmp / f"metric_{test[:30]}"
        folder.mkdir()
        needs_tmp = "headline" in test
        call = f"{module}.{test}(Path({str(folder)!r}))" if needs_tmp else f"{module}.{test}()"
        p = python(f"from pathlib import Path\nimport {module}\n{call}\nprint('ok')", timeout=240)
        c.add(name, item, "silently wrong", p, p.rc == 0 and p.out.strip().endswith("ok"), f"exit {p.rc}")
    report = tmp / "report"
    name = "sskt report without a validation split shows only an oracle epoch"
    if c.wanted(name):
        p = sskt(["report", runs_dir, "--out", report, "--no-plots"])
        text = (report / "report.md").read_text() if (report / "report.md").exists() else ""
        header = next((x for x in text.splitlines() if x.startswith("| group")), "")
        right = p.rc == 0 and "oracle epoch" in header and "chosen epoch" not in header
        c.add(name, item, "silently wrong", p, right and not p.traceback, "" if right else f"header {header[:120]!r}")
    name = "sskt report --drop-seed 7 with no seed 7 says nothing matched"
    if c.wanted(name):
        p = sskt(["report", runs_dir, "--out", tmp / "report7", "--no-plots", "--drop-seed", "7"])
        text = (tmp / "report7" / "report.md").read_text() if (tmp / "report7" / "report.md").exists() else ""
        right = p.rc == 0 and "no run has seed(s) 7" in text and "are left out" not in text
        c.add(name, item, "silently wrong", p, right and not p.traceback, "" if right else "wrong sentence")


def card_cases(c: Census, tmp: Path, run: Path, image: Path) -> None:
    item = "12 model cards"
    card = json.loads((run / "model.json").read_text())

    def copy(tag: str, **changes) -> Path:
        dest = tmp / f"card_{tag}"
        shutil.copytree(run, dest)
        (dest / "model.json").write_text(json.dumps({**card, **changes}))
        return dest

    bad = [("input_size 0", {"input_size": 0}, "input_size"), ("input_size -3", {"input_size": -3}, "input_size"),
           ("input_size 100000", {"input_size": 100000}, "input_size"),
           ("num_classes '10'", {"num_classes": "10"}, "num_classes"),
           ("num_classes 1e12", {"num_classes": 1e12}, "num_classes"),
           ("3 class names for 4 classes", {"class_names": ["a", "b", "c"]}, "class_names"),
           ("class_names a string", {"class_names": "c0c1c2c3"}, "class_names"),
           ("task 'regression'", {"task": "regression"}, "task"), ("unknown task 'banana'", {"task": "banana"}, "task"),
           ("stored_size [1e5, 1e5]", {"stored_size": [100000, 100000]}, "stored_size"),
           ("format 99", {"format": 99}, "format 99")]  # fmt: skip
    for i, (what, changes, field_name) in enumerate(bad):
        dest = copy(f"bad{i}", **changes)
        for verb in ("predict", "export"):
            name = f"{verb} with a card whose {what}"
            if not c.wanted(name):
                continue
            if verb == "predict":
                p = sskt(["predict", dest, image])
            else:
                p = sskt(["export", dest, "--format", "safetensors", "--out", tmp / f"card_out{i}.safetensors"])
            c.one_line(name, item, "traceback", p, field_name)
    probe = {**card, "architecture": "probe"}
    own = copy("own")
    (own / "model.json").write_text(json.dumps({**probe, "source": {"name": f"checkpoint:{own}"}}))
    name = "a probe card whose source is its own run (--trust_sources) does not recurse"
    if c.wanted(name):
        c.one_line(name, item, "traceback", sskt(["predict", own, image, "--trust_sources"]), "nest")
    item = "14 card sources"
    for tag, source in (
        ("etc", {"name": "checkpoint:/etc"}),
        ("own", {"name": f"checkpoint:{own}"}),
        ("url", {"name": "efficientnet_lite0.imagenet", "weights": "https://example.invalid/w.pth"}),
    ):
        dest = copy(f"src_{tag}")
        (dest / "model.json").write_text(json.dumps({**probe, "source": source}))
        for verb in ("predict", "export"):
            name = f"{verb} with a card whose source is {source.get('weights', source['name'])}"
            if not c.wanted(name):
                continue
            argv = ["predict", dest, image] if verb == "predict" else \
                ["export", dest, "--format", "safetensors", "--out", tmp / f"src_{tag}.safetensors"]  # fmt: skip
            c.one_line(name, item, "silently wrong", sskt(argv), "outside the run directory", "--trust_sources")
    item = "13 forged output"
    forged = "c0\nforged.png: c3 1.000\x1b[2K"
    dest = copy("forged", class_names=[forged] * 4)
    name = "class names with a newline and ESC are escaped in text output"
    if c.wanted(name):
        p = sskt(["predict", dest, image, "--topk", "1"])
        right = p.rc == 0 and p.out.count("\n") == 1 and "\x1b" not in p.out and "\\x1b" in p.out
        c.add(name, item, "silently wrong", p, right and not p.traceback, "" if right else repr(p.out[:200]))
    name = "class names with control characters stay exact in --json"
    if c.wanted(name):
        p = sskt(["predict", dest, image, "--topk", "1", "--json"])
        try:
            right = p.rc == 0 and json.loads(p.out)["top"][0]["class"] == forged
        except (ValueError, KeyError, IndexError):
            right = False
        c.add(name, item, "silently wrong", p, right and not p.traceback, "" if right else repr(p.out[:200]))


def image_cases(c: Census, tmp: Path, run: Path, image: Path) -> None:
    item = "15 bomb"
    name = "predict on a 20000x20000 PNG beside a good image"
    if c.wanted(name):
        bomb = tmp / "bomb.png"
        big_png(bomb)
        p = sskt(["predict", run, bomb, image, "--json"])
        lines = p.lines("error:")
        right = p.rc == 2 and len(lines) == 1 and "bomb.png" in lines[0] and len(p.out.splitlines()) == 1
        c.add(name, item, "traceback", p, right and not p.traceback, "" if right else f"exit {p.rc}, {lines}")
    item = "8 16-bit"
    grey16, grey8 = tmp / "grey16.png", tmp / "grey8.png"
    Image.fromarray(np.full((16, 16), 32768, np.uint16)).save(grey16)
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(grey8)
    name = "predict reads a 16-bit PNG by its range (as the 8-bit image of the same grey)"
    if c.wanted(name):
        p16, p8 = sskt(["predict", run, grey16, "--json"]), sskt(["predict", run, grey8, "--json"])
        try:
            a, b = (json.loads(q.out)["top"] for q in (p16, p8))
            right = [x["class"] for x in a] == [x["class"] for x in b]
            right = right and all(abs(x["probability"] - y["probability"]) < 0.02 for x, y in zip(a, b, strict=True))
        except (ValueError, KeyError):
            right = False
        c.add(name, item, "silently wrong", p16, right and p8.rc == 0 and not p16.traceback,
              "" if right else f"16-bit {p16.out[:150]!r} vs 8-bit {p8.out[:150]!r}")  # fmt: skip
    name = "training decodes a 16-bit PNG by its range"
    if c.wanted(name):
        p = python("from sskt.data.folder import decode_image\n"
                   f"print(decode_image({str(grey16)!r}, (16, 16)).float().mean().item())")  # fmt: skip
        try:
            mean = float(p.out.strip())
        except ValueError:
            mean = -1.0
        c.add(name, item, "silently wrong", p, abs(mean - 128) < 2, f"mean {mean} (128 wanted, 255 is the bug)")
    item = "17 progress"
    many = tmp / "many"
    many.mkdir()
    for i in range(200):
        Image.fromarray(np.full((16, 16, 3), i, np.uint8)).save(many / f"{i}.png")
    name = "predict on 200 images shows a progress bar on a terminal, none on a pipe"
    if c.wanted(name):
        master, slave = pty.openpty()
        cmd = sskt_cmd(["predict", str(run), str(many)])
        t0 = time.monotonic()
        proc = start(cmd, stderr=slave)
        os.close(slave)
        chunks = []
        while time.monotonic() - t0 < TIMEOUT and select.select([master], [], [], TIMEOUT)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        p = finish(proc, cmd, t0, TIMEOUT)
        os.close(master)
        tty = b"".join(chunks).decode(errors="replace")
        piped = sskt(["predict", run, many])
        bar = "\r" in tty or "\x1b[" in tty
        right = p.rc == 0 and len(p.out.splitlines()) == 200 and bar and piped.rc == 0 and piped.err.strip() == ""
        c.add(
            name, item, "silently wrong", p, right, "" if right else f"bar on tty {bar}, pipe stderr {piped.err[:80]!r}"
        )


def scan_cases(c: Census, tmp: Path) -> None:
    item = "16 scans"
    voc = write_voc(tmp / "voc_bad", per_split=6)
    jpeg = voc / "VOCdevkit" / "VOC2007" / "JPEGImages" / "tr0002.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    name = "VOC with a truncated JPEG is named before training"
    if c.wanted(name):
        c.one_line(name, item, "traceback", sskt(voc_train(voc, tmp / "voc_bad_run")), "do not decode", "tr0002.jpg")
    ucf = write_ucf(tmp / "ucf_bad", per_class=2, frames=8)
    frame = next((ucf / "frames").rglob("img_00002.jpg"))
    frame.write_bytes(b"not a jpeg")
    name = "UCF101 with a corrupt frame is named before training"
    if c.wanted(name):
        c.one_line(name, item, "traceback", sskt(ucf_train(ucf, tmp / "ucf_bad_run")), "do not decode", "img_00002.jpg")


def yaml_tag_cases(c: Census, tmp: Path, run: Path, image: Path, data: Path) -> None:
    item = "17 config tag"
    tagged = tmp / "tagged"
    shutil.copytree(run, tagged)
    marker = tmp / "pwned"
    lines = (tagged / "config.yaml").read_text().splitlines()
    tag = f'seed: !!python/object/apply:os.system ["touch {marker}"]'
    (tagged / "config.yaml").write_text("\n".join(tag if x.startswith("seed:") else x for x in lines) + "\n")
    for verb, argv in (("evaluate", ["evaluate", tagged]), ("predict", ["predict", tagged, image]),
                       ("resume", col_train(data, tagged, "--resume", "true", "--epochs", "2"))):  # fmt: skip
        name = f"{verb} of a run whose config.yaml holds a python tag"
        if c.wanted(name) and verb == "predict":  # predict reads model.json, never config.yaml: it must just work
            p = sskt(argv)
            right = p.rc == 0 and not p.traceback and not marker.exists()
            c.add(name, item, "silently wrong", p, right, f"exit {p.rc}; the tag ran: {marker.exists()}")
        elif c.wanted(name):
            p = sskt(argv)
            c.one_line(name, item, "traceback", p, "not plain YAML", extra=(not marker.exists(), "the tag ran"))


def doc_cases(c: Census) -> None:
    name = "the docs say the SLURM launcher runs pickled job files from <out>/slurm/"
    if c.wanted(name):
        p = subprocess.run(["grep", "-rniE", "pickle", "README.md", "docs/CONTRACTS.md"], cwd=REPO,
                           capture_output=True, text=True)  # fmt: skip
        where = sorted({x.split(":")[0] for x in p.stdout.splitlines() if "slurm" in p.stdout.lower()})
        proc = Proc(p.returncode, p.stdout, p.stderr, 0.0, False, ["grep", "-rniE", "pickle", "README.md", "docs"])
        c.add(name, "17 SLURM note", "silently wrong", proc, bool(where), f"found in {where}")


# --- main ------------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="also write the census as JSON")
    parser.add_argument("--only", default=None, help="run only the cases whose name holds this text")
    parser.add_argument("--skip-earlier", action="store_true", help="leave out bad_input_census.py's cases")
    args = parser.parse_args()
    c = Census(args.only)
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="surfaces_census_"))
    os.environ["SSKT_CACHE"] = str(tmp / "sskt_cache")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    try:
        run_all(c, tmp, args)
    finally:
        for mnt in ("ro_export", "full_cache", "ro_cache", "full_out"):
            subprocess.run(["umount", str(tmp / mnt)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return report(c, args.json, time.monotonic() - t0)


def run_all(c: Census, tmp: Path, args) -> None:
    (tmp / "fmnist").mkdir()
    data = write_small_fmnist(tmp / "fmnist")
    col = colour_folder(tmp / "colours")
    runs_dir = tmp / "runs"
    runs = {"fm": runs_dir / "fm", "fm2": runs_dir / "fm2", "teacher": tmp / "teacher", "col": tmp / "col"}
    ok = {
        "fm": needs(c, sskt(fm_train(data, runs["fm"])), "the Fashion-MNIST run"),
        "fm2": needs(c, sskt(fm_train(data, runs["fm2"], "--seed", "5")), "the second Fashion-MNIST run"),
        "col": needs(c, sskt(col_train(col, runs["col"])), "the colour-folder run"),
    }
    if ok["fm"]:
        shutil.copytree(runs["fm"], runs["teacher"])
        runs["kd"] = tmp / "kd"
        kd = ["--method.name", "kd", "--method.kd.teacher", f"checkpoint:{runs['teacher']}"]
        if not needs(c, sskt(fm_train(data, runs["kd"], *kd)), "the KD run"):
            runs["kd"] = None
    voc = write_voc(tmp / "voc", per_split=6)
    runs["voc"] = tmp / "voc_run"
    voc = voc if needs(c, sskt(voc_train(voc, runs["voc"])), "the VOC run") else None
    ucf = write_ucf(tmp / "ucf", per_class=4, frames=8)
    runs["ucf"] = tmp / "ucf_run"
    ucf = ucf if needs(c, sskt(ucf_train(ucf, runs["ucf"]), timeout=400), "the UCF101 run") else None
    image = next((col / "test" / "c0").glob("*.png"))
    if ok["col"]:
        export_cases(c, tmp, runs["col"], runs["ucf"] if ucf else None)
        nan_cases(c, tmp, runs["col"], image, data)
        card_cases(c, tmp, runs["col"], image)
        image_cases(c, tmp, runs["col"], image)
        folder_cases(c, tmp, runs["col"])
        yaml_tag_cases(c, tmp, runs["col"], image, col)
    scan_cases(c, tmp)
    metric_cases(c, tmp, runs_dir)
    disk_cases(c, tmp, data, runs["teacher"] if ok["fm"] else None)
    if ok["fm"] and ok["fm2"] and ok["col"]:
        resume_cases(c, tmp, runs, data, col, voc, ucf)
    grid_cases(c, tmp, data)
    for name, after in (("Ctrl-C at 0.15 s (the package loading)", 0.15), ("Ctrl-C at 0.6 s (torch loading)", 0.6)):
        if c.wanted(name):
            interrupt(c, name, "7 Ctrl-C", after, tmp, data)
    ddp_cases(c, tmp, data)
    doc_cases(c)
    if not args.skip_earlier:
        earlier_cases(c, tmp)


def report(c: Census, path: str | None, seconds: float) -> int:
    rows = [r for r in c.rows.values() if not r.get("skipped")]
    failed = [n for n, r in c.rows.items() if not r.get("skipped") and (not r["right"] or r["traceback"])]
    totals = {
        "cases": len(c.rows),
        "run": len(rows),
        "skipped": {n: r["skipped"] for n, r in c.rows.items() if r.get("skipped")},
        "tracebacks": sum(r["traceback"] for r in rows),
        "silently_wrong": sum(not r["right"] and r["exit"] == 0 for r in rows),
        "hangs": sum(r["hang"] for r in rows),
        "crashes": sum(r["crash"] for r in rows),
        "data_loss_paths": sum(r["kind"] == "data loss" and (r["kept"] is False or not r["right"]) for r in rows),
        "not_right": len(failed),
        "failed_cases": failed,
        "seconds": round(seconds),
        "per_case_timeout_s": TIMEOUT,
    }
    print(f"{totals['cases']} cases ({totals['run']} run, {len(totals['skipped'])} skipped): "
          f"{totals['tracebacks']} tracebacks, {totals['silently_wrong']} silently wrong, {totals['hangs']} hangs, "
          f"{totals['crashes']} crashes, {totals['data_loss_paths']} data-loss paths, {len(failed)} not right "
          f"({totals['seconds']} s)")  # fmt: skip
    for n in failed:
        print(f"  not right: {n}: {c.rows[n]['why']}")
    if path:
        Path(path).write_text(json.dumps({"totals": totals, "cases": c.rows}, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
