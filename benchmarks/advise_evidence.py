"""The evidence behind ``sskt advise``'s rule (issue 27, part 2): per benchmark regime, the headroom and the
transferability scores beside the gains SSKT and KD measured there.

For each regime (benchmark v2, and each label budget and source resolution of benchmark v3 whose fresh-seed records
exist) and each fresh seed with a finished scratch + EMA run, ``sskt advise`` runs on that seed's labelled and
validation images with that run as its ``--reference``: the L-BFGS probe's validation accuracy, the headroom over
scratch + EMA, LogME, LEEP, NCE and H-score. Beside them, from the same seeds' records: the paired test gain over
scratch + EMA of the best SSKT-family row and of the best KD row (each chosen by its mean validation accuracy on
those seeds; the test set chooses nothing). Then, over the regimes that have both:

- how often "headroom <= 0 means no gain" held (no gain: the paired 95% interval is not above zero), and how often
  positive headroom came with a gain;
- Spearman's rank correlation of each score with each gain (with fewer than 3 regimes there is no correlation to
  speak of, and the output says so).

Writes ``benchmarks/results/advise_evidence.json`` and ``docs/advise_evidence.md``; the per-seed advise outputs go
to ``benchmarks/results/advise_evidence/<regime>/seed<N>.json``, and a seed already there is not recomputed.

    .venv/bin/python benchmarks/advise_evidence.py [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sskt  # noqa: F401  (its thread settings come before torch's)
from sskt.config_io import save_config
from sskt.experiments.advise import advise_main
from sskt.experiments.stats import paired_diff, summarize
from sskt.files import write_text_atomic
from sskt.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SOURCE = "efficientnet_lite0.imagenet"
SCORES = ("headroom", "probe_val_acc", "logme", "leep", "nce", "h_score")
SEARCH_SEED = 100


@dataclass(frozen=True)
class Regime:
    """Where a regime's fresh-seed records are and which of its rows are which."""

    key: str
    title: str
    records: str
    size: int
    scratch: str
    sskt_rows: tuple[str, ...]
    kd_rows: tuple[str, ...]


def v3(labels: int, size: int) -> Regime:
    """A regime of benchmark v3 (its fresh grids name cells ``l<labels>-<row>-seed<N>``)."""
    rows = [f"l{labels}-s{size}_{r}" for r in ("sskt", "sskt_pool", "kd_sskt_pool", "kd_pool")]
    return Regime(f"l{labels}_s{size}", f"v3: {labels} labels per class, source at {size} px",
                  f"benchmarks/records/fashion_v3_fresh_l{labels}", size, f"l{labels}-scratch_ema",
                  tuple(rows[:3]), (rows[3],))  # fmt: skip


REGIMES = (
    Regime(
        "v2",
        "v2: 100 labels per class, source at 64 px",
        "benchmarks/records/fashion_v2",
        64,
        "scratch_ema",
        ("sskt", "sskt_unlabeled", "kd_probe_sskt_unlabeled"),
        ("kd_probe_unlabeled",),
    ),  # fmt: skip
    *(v3(labels, size) for labels in (10, 25, 100) for size in (64, 224)),
)


def finished(path: Path) -> dict | None:
    """The summary of a finished run at ``path``, else None."""
    run = RunDir(path)
    return run.read_summary() if run.is_finished() else None


def fresh_seeds(regime: Regime) -> list[int]:
    """Seeds (not the search seed) whose scratch + EMA run finished."""
    root = ROOT / regime.records
    seeds = [int(p.name.rpartition("-seed")[2]) for p in root.glob(f"{regime.scratch}-seed*")] if root.is_dir() else []
    return sorted(s for s in seeds if s != SEARCH_SEED and finished(root / f"{regime.scratch}-seed{s}"))


def advise_seed(regime: Regime, seed: int, threads: int) -> dict:
    """advise's row for the source at the regime's size on this seed (cached in the results folder)."""
    saved = RESULTS / "advise_evidence" / regime.key / f"seed{seed}.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    ref = ROOT / regime.records / f"{regime.scratch}-seed{seed}"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"  # the run's config in today's terms (an older run's keys upgraded)
        save_config(RunDir(ref).read_config(), config)
        argv = ["--config", str(config), "--sources", SOURCE, "--input-sizes", str(regime.size),
                "--reference", str(ref), "--out", str(Path(tmp) / "out"),
                "--progress", "false", "--threads", str(threads)]  # fmt: skip
        started = time.perf_counter()
        if advise_main(argv) != 0:
            raise SystemExit(f"advise failed on {regime.key} seed {seed}")
        result = json.loads((Path(tmp) / "out" / "advise.json").read_text())
    (row,) = result["rows"]
    out = {k: row[k] for k in SCORES} | {"reference_val_acc": result["reference"]["val_acc"],
                                         "seconds": time.perf_counter() - started}  # fmt: skip
    saved.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(saved, json.dumps(out, indent=2) + "\n")
    return out


def metric(regime: Regime, row: str, seeds: list[int], key: str) -> dict[int, float]:
    """The row's ``best`` (validation-chosen epoch) value of ``key`` per seed that finished."""
    out = {}
    for seed in seeds:
        summary = finished(ROOT / regime.records / f"{row}-seed{seed}")
        if summary and isinstance(summary.get("best", {}).get(key), (int, float)):
            out[seed] = float(summary["best"][key])
    return out


def gain(regime: Regime, rows: tuple[str, ...], seeds: list[int]) -> dict | None:
    """The paired test gain over scratch + EMA of the row (of ``rows``, with 2 seeds or more) whose mean validation
    accuracy is highest; None when no row has 2 seeds."""
    vals = {r: metric(regime, r, seeds, "val_acc") for r in rows}
    ready = [r for r in rows if len(vals[r]) >= 2]
    if not ready:
        return None
    best = max(ready, key=lambda r: summarize(list(vals[r].values())).mean)
    diff = paired_diff(metric(regime, best, seeds, "test_acc"), metric(regime, regime.scratch, seeds, "test_acc"))
    return {"row": best, "mean": diff.mean, "low": diff.low, "high": diff.high, "n": diff.n,
            "text": diff.format(), "gain": diff.n >= 2 and diff.low > 0}  # fmt: skip


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho: Pearson's correlation of the ranks (ties get their mean rank); NaN when either is constant."""

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        out = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sx, sy = math.sqrt(sum((a - mx) ** 2 for a in rx)), math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else math.nan


def regime_row(regime: Regime, threads: int) -> dict:
    """Scores (mean over seeds), gains, and the per-seed values of one regime; ``pending`` when no seed is ready."""
    seeds = fresh_seeds(regime)
    if not seeds:
        return {"regime": regime.key, "title": regime.title, "pending": f"no finished {regime.scratch} run"}
    per_seed = {s: advise_seed(regime, s, threads) for s in seeds}
    scores = {k: summarize([per_seed[s][k] for s in seeds]) for k in (*SCORES, "reference_val_acc")}
    return {
        "regime": regime.key, "title": regime.title, "seeds": seeds,
        "scores": {k: {"mean": v.mean, "std": v.std, "n": v.n} for k, v in scores.items()},
        "sskt_gain": gain(regime, regime.sskt_rows, seeds), "kd_gain": gain(regime, regime.kd_rows, seeds),
        "per_seed": per_seed,
    }  # fmt: skip


def findings(rows: list[dict]) -> dict:
    """The rule's record and the rank correlations over the regimes with scores and gains."""
    out: dict = {}
    for which in ("sskt_gain", "kd_gain"):
        done = [r for r in rows if r.get(which)]
        none_ = [r for r in done if r["scores"]["headroom"]["mean"] <= 0]
        some = [r for r in done if r["scores"]["headroom"]["mean"] > 0]
        corr = {k: spearman([r["scores"][k]["mean"] for r in done], [r[which]["mean"] for r in done]) for k in SCORES}
        out[which] = {
            "regimes": len(done),
            "no_headroom_no_gain": [sum(not r[which]["gain"] for r in none_), len(none_)],
            "headroom_gain": [sum(r[which]["gain"] for r in some), len(some)],
            "spearman": corr if len(done) >= 3 else None,
        }
    return out


def markdown(rows: list[dict], found: dict) -> str:
    """``docs/advise_evidence.md``."""
    lines = ["# The evidence for `sskt advise`'s rule", "",
             "Written by `benchmarks/advise_evidence.py` from the benchmark records in git. Per regime: advise on each "
             "fresh seed's labelled and validation images (EfficientNet-Lite0, L-BFGS probe, its scratch + EMA run as "
             "the reference), mean +- std over those seeds, beside the paired test gain over scratch + EMA of the "
             "best SSKT-family row and the best KD row (chosen by mean validation accuracy; 95% intervals).", "",
             "| regime | seeds | probe val | scratch + EMA val | headroom | LogME | LEEP | NCE | H-score | "
             "best SSKT-family row: gain | best KD row: gain |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if "pending" in r:
            lines.append(f"| {r['title']} | pending: {r['pending']} |" + " |" * 9)
            continue
        s = r["scores"]
        cell = lambda k, d=1, s=s: f"{s[k]['mean']:.{d}f} +- {s[k]['std']:.{d}f}"  # noqa: E731
        gains = [f"{g['row']}: {g['text']}" if g else "pending" for g in (r["sskt_gain"], r["kd_gain"])]
        lines.append(f"| {r['title']} | {len(r['seeds'])} | {cell('probe_val_acc')} | {cell('reference_val_acc')} | "
                     f"{cell('headroom')} | {cell('logme', 3)} | {cell('leep', 3)} | {cell('nce', 3)} | "
                     f"{cell('h_score', 2)} | {gains[0]} | {gains[1]} |")  # fmt: skip
    lines += ["", "## What held", ""]
    for which, name in (("sskt_gain", "the best SSKT-family row"), ("kd_gain", "KD from the adapted teacher")):
        f = found[which]
        lines.append(f"- {name}: {f['regimes']} regime(s) with gains measured. Headroom <= 0 and no gain: "
                     f"{f['no_headroom_no_gain'][0]} of {f['no_headroom_no_gain'][1]}; headroom > 0 and a gain: "
                     f"{f['headroom_gain'][0]} of {f['headroom_gain'][1]}.")  # fmt: skip
        if f["spearman"] is None:
            lines.append(f"  - Rank correlations need 3 regimes or more (have {f['regimes']}): none is claimed.")
        else:
            corr = ", ".join(f"{k} {v:+.2f}" for k, v in f["spearman"].items())
            lines.append(f"  - Spearman's rho with the gain over {f['regimes']} regimes: {corr}.")
    lines += [
        "",
        "Limits: one dataset (Fashion-MNIST), one target (ResNet20), one source (EfficientNet-Lite0), and "
        "as many regimes as have fresh-seed records; a rule read off so few points is a hint, not a law.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    rows = [regime_row(r, args.threads) for r in REGIMES]
    found = findings(rows)
    write_text_atomic(RESULTS / "advise_evidence.json", json.dumps({"regimes": rows, "findings": found}, indent=2,
                                                                    default=str) + "\n")  # fmt: skip
    write_text_atomic(ROOT / "docs" / "advise_evidence.md", markdown(rows, found))
    print(markdown(rows, found))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
