"""Census of bad inputs: runs each case of the reliability drill as a real `sskt` process and reports its exit
status, whether it printed one `error:` line, whether a traceback appeared, and whether it wrote anything.

    .venv/bin/python benchmarks/bad_input_census.py [--json census.json]

Each case must exit 2 with one line and write nothing (Ctrl-C: exit 130 with one line). The data is a small
Fashion-MNIST cut made from the Debian files, and image folders the script writes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _folder(root: Path, classes=("a", "b"), empty: str | None = None, broken: bool = False) -> Path:
    for split in ("train", "test"):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                Image.fromarray(np.full((8, 8, 3), 40 * c + i, np.uint8)).save(root / split / name / f"{i}.png")
    if empty:
        (root / "train" / empty).mkdir()
    if broken:
        (root / "train" / "a" / "1.png").write_bytes(b"\x89PNG truncated")
    return root


def cases(tmp: Path) -> list[tuple[str, list[str], Path | None]]:
    """(name, sskt argv, the --out that must stay unwritten)."""
    base = ["--data.root", str(FMNIST), "--data.labels_per_class", "4", "--epochs", "1", "--progress", "false"]
    file = tmp / "a_file"
    file.write_text("x")
    (tmp / "bad.yaml").write_text("base: [\n")
    (tmp / "tag.yaml").write_text('seeds: !!python/object/apply:os.system ["echo pwned"]\n')
    empty = _folder(tmp / "empty", empty="c")
    single = _folder(tmp / "single", classes=("only",))
    broken = _folder(tmp / "broken", broken=True)

    def train(name: str, *extra: str) -> tuple[str, list[str], Path]:
        out = tmp / f"run_{len(name)}_{abs(hash(name)) % 10**6}"
        return name, ["train", *base, "--out", str(out), *extra], out

    def folder(name: str, root: Path) -> tuple[str, list[str], Path]:
        out = tmp / f"run_{root.name}"
        argv = ["train", "--data.name", "imagefolder", "--data.root", str(root), "--data.image_size", "8"]
        return name, [*argv, "--epochs", "1", "--progress", "false", "--out", str(out)], out

    return [
        train("--threads -1", "--threads", "-1"),
        train("--threads 0", "--threads", "0"),
        train("--optim.lr -1", "--optim.lr", "-1"),
        train("--data.num_workers -1", "--data.num_workers", "-1"),
        train("--data.image_size -4", "--data.image_size", "-4"),
        train("--data.image_size 0", "--data.image_size", "0"),
        ("--out is a file", ["train", *base, "--out", str(file)], None),
        ("--out ''", ["train", *base, "--out", ""], None),
        ("grid YAML syntax error", ["grid", "--config", str(tmp / "bad.yaml"), "--dry-run"], None),
        ("grid YAML python tag", ["grid", "--config", str(tmp / "tag.yaml"), "--dry-run"], None),
        train("--accelerator cuda without a GPU", "--accelerator", "cuda"),
        train("--epoch 3 (abbreviation)", "--epoch", "3"),
        train("--epohcs 3 (misspelt)", "--epohcs", "3"),
        train("--head.kind mlp", "--head.kind", "mlp"),
        train("--method.sskt.aux_loss l2", "--method.sskt.aux_loss", "l2"),
        train("--data.labels_per_class 7000 (classes hold 6000)", "--data.labels_per_class", "7000"),
        train("--model.name resnet7", "--model.name", "resnet7"),
        folder("empty training class folder", empty),
        folder("single-class dataset", single),
        folder("image that does not decode", broken),
        # issue 26, items 10 and 16
        train("--method.kd.lam 2", "--method.name", "kd", "--method.kd.lam", "2"),
        train("--method.kd.temperature 0", "--method.name", "kd", "--method.kd.temperature", "0"),
        train("--precise_bn -5", "--precise_bn", "-5"),
        train("--optim.momentum 5", "--optim.momentum", "5"),
        train("--optim.weight_decay -1", "--optim.weight_decay", "-1"),
        train("--devices 0", "--devices", "0"),
        train("--data.image_size 64 on fashion_mnist", "--data.image_size", "64"),
        train("--data.clip_len 8 on fashion_mnist", "--data.clip_len", "8"),
        _empty_split("voc2007 with an empty trainval.txt", tmp, "voc"),
        _empty_split("ucf101 with an empty trainlist01.txt", tmp, "ucf"),
    ]


def _empty_split(name: str, tmp: Path, which: str) -> tuple[str, list[str], Path]:
    """A dataset folder whose training split file lists nothing."""
    root = tmp / f"empty_{which}"
    if which == "voc":
        (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main").mkdir(parents=True)
        (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").write_text("\n")
    else:
        (root / "splits").mkdir(parents=True)
        (root / "splits" / "classInd.txt").write_text("1 a\n2 b\n")
        (root / "splits" / "trainlist01.txt").write_text("")
    out = tmp / f"run_empty_{which}"
    dataset = "voc2007" if which == "voc" else "ucf101"
    argv = ["train", "--data.name", dataset, "--data.root", str(root), "--data.download", "false", "--epochs", "1"]
    return name, [*argv, "--progress", "false", "--out", str(out)], out


def run_case(argv: list[str], out: Path | None) -> dict:
    proc = subprocess.run([sys.executable, "-m", "sskt", *argv], capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip().splitlines()
    return {
        "exit": proc.returncode,
        "one_line": len([line for line in err if line.startswith("error:")]) == 1,
        "traceback": "Traceback" in proc.stderr,
        "wrote": bool(out is not None and out.exists()),
        "message": err[-1] if err else "",
    }


def ctrl_c(tmp: Path, after: float = 20.0) -> dict:
    """SIGINT a training run ``after`` seconds in (20: its first epoch; under a second: while modules load): one
    line, exit 130."""
    out = tmp / f"run_interrupted_{after}"
    argv = ["train", "--data.root", str(FMNIST), "--epochs", "50", "--progress", "false", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "sskt", *argv], stderr=subprocess.PIPE, text=True)
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    return {"exit": proc.returncode, "one_line": len([x for x in lines if x.startswith("interrupted:")]) == 1,
            "traceback": "Traceback" in err, "wrote": None, "message": lines[-1] if lines else ""}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="also write the census as JSON")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("SSKT_CACHE", str(Path(tmp) / "cache"))
        for name, argv, out in cases(Path(tmp)):
            rows[name] = run_case(argv, out)
            r = rows[name]
            print(f"{r['exit']:>3}  one line {r['one_line']!s:5}  traceback {r['traceback']!s:5}  "
                  f"wrote {r['wrote']!s:5}  {name}: {r['message'][:100]}", flush=True)  # fmt: skip
        for name, after in (("Ctrl-C during training", 20.0), ("Ctrl-C while modules load", 0.4)):
            rows[name] = r = ctrl_c(Path(tmp), after)
            flags = f"one line {r['one_line']!s:5}  traceback {r['traceback']!s:5}"
            print(f"{r['exit']:>3}  {flags}  {name}: {r['message']}")
    bad = [n for n, r in rows.items() if r["traceback"] or not r["one_line"] or r["wrote"]]
    bad += [n for n, r in rows.items() if r["exit"] not in (2, 130)]
    tracebacks = sum(r["traceback"] for r in rows.values())
    print(f"{len(rows)} cases: {tracebacks} tracebacks, {len(set(bad))} not one clean line with nothing written")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
