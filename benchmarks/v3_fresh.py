"""Benchmark v3's protocol step from a regime's search to its fresh seeds: for every row, the setting and schedule
its search cells' validation accuracy chose on the search seed, written as the fresh-seed grids.

A search cell's label is its row's name followed by the searched values (``s224_kd_pool_l1_T4_e400``: the row
``s224_kd_pool`` at lam 1, T 4, 400 epochs). Per row, the cell with the highest ``best.val_acc`` wins (ties: the
one listed first, the shorter schedule); the test set is never read. Two grids are written beside the search's:

- ``fresh_<regime>.yaml``: every row at its chosen setting on fresh seeds 0, 1, 2;
- ``fresh_<regime>_top.yaml``: seeds 3 and 4 for scratch + EMA (every difference pairs with it), the search's top
  two rows, and, per source resolution, the best SSKT-family row and the best row outside the family (the rows that
  source-free rows such as FixMatch join in every resolution's regime): the regime map's verdict pairs exactly
  these, so its intervals then have five seeds.

The search must be finished (every cell with a summary); otherwise this names the cells still missing and writes
nothing.

    .venv/bin/python benchmarks/v3_fresh.py configs/bench/v3/search_l10.yaml [--partial --to /tmp/check]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from sskt.config_io import read_yaml
from sskt.experiments.regime_map import ROW_PX, SSKT_FAMILY
from sskt.files import write_text_atomic
from sskt.rundir import RunDir

SEARCH_SEED = 100
SUFFIX = re.compile(r"(_(a|l|T|r)[\d.]+)*(_e\d+)?$")
SCRATCH = "scratch_ema"


def row_of(label: str) -> str:
    """The row a search cell belongs to: its label without the searched values."""
    return SUFFIX.sub("", label)


def chosen(raw: dict, root: Path) -> tuple[dict[str, dict], dict[str, float], list[str]]:
    """Per row, the winning cell's axis value and its validation accuracy; and the cells not finished."""
    (regime,) = raw["axes"]["regime"]
    best: dict[str, dict] = {}
    score: dict[str, float] = {}
    missing = []
    for value in raw["axes"]["row"]:
        cell = root / f"{regime['label']}-{value['label']}-seed{SEARCH_SEED}"
        run = RunDir(cell)
        if not run.is_finished():
            missing.append(cell.name)
            continue
        val = float(run.read_summary()["best"]["val_acc"])
        row = row_of(value["label"])
        if row not in score or val > score[row]:
            best[row], score[row] = {**value, "label": row, "x-chosen-from": value["label"]}, val
    return best, score, missing


def top_rows(score: dict[str, float]) -> list[str]:
    """scratch + EMA, the two rows validation ranks highest, and per source resolution the best SSKT-family row and
    the best other row (source-free rows belong to every resolution)."""
    order = sorted(score, key=lambda r: -score[r])
    keep = [SCRATCH, *order[:2]]
    resolutions = {m["px"] for r in order if (m := ROW_PX.match(r))} or {None}
    for px in sorted(resolutions, key=str):
        regime = [r for r in order if r != SCRATCH and (not ROW_PX.match(r) or ROW_PX.match(r)["px"] == px)]
        keep += [r for r in regime if SSKT_FAMILY.search(r)][:1] + [r for r in regime if not SSKT_FAMILY.search(r)][:1]
    return list(dict.fromkeys(r for r in keep if r in score))


def grid_text(raw: dict, rows: list[dict], seeds: list[int], out: str, comment: list[str]) -> str:
    """The YAML of a fresh grid (the search's base and regime, these rows and seeds)."""
    doc = {"base": raw["base"], "axes": {"regime": raw["axes"]["regime"], "row": rows}, "seeds": seeds, "out": out}
    body = yaml.safe_dump(doc, sort_keys=False, width=200)
    return "".join(f"# {line}\n" if line else "#\n" for line in comment) + body


def main(argv: list[str]) -> int:
    search, partial = Path(argv[0]), "--partial" in argv  # --partial: from the finished cells only (a check)
    raw = read_yaml(search)
    best, score, missing = chosen(raw, Path(raw["out"]))
    if missing and not partial:
        print(f"the search is not finished: {len(missing)} cell(s) missing, e.g. {', '.join(missing[:4])}")
        return 1
    regime = raw["axes"]["regime"][0]["label"]
    out = raw["out"].replace("search", "fresh")
    notes = [f"{r}: {best[r]['x-chosen-from']} (val {score[r]:.2f})" for r in sorted(score, key=lambda r: -score[r])]
    rows = [{k: v for k, v in best[r].items() if not k.startswith("x-")} for r in best]
    head = [f"Benchmark v3, {regime}: fresh seeds confirm what the search ({search.name}, seed {SEARCH_SEED}) chose",
            "on validation; written by benchmarks/v3_fresh.py, never edited by hand. Chosen per row (search val):",
            *[f"  {n}" for n in notes], ""]  # fmt: skip
    here = Path(argv[argv.index("--to") + 1]) if "--to" in argv else search.parent
    text = grid_text(raw, rows, [0, 1, 2], out, [*head, f"sskt grid --config {here / f'fresh_{regime}.yaml'}"])
    write_text_atomic(here / f"fresh_{regime}.yaml", text)
    top = top_rows(score)
    top_text = grid_text(raw, [r for r in rows if r["label"] in top], [3, 4], out,
                         [*head, f"Seeds 3 and 4 for {', '.join(top)}.",
                          f"sskt grid --config {here / f'fresh_{regime}_top.yaml'}"])  # fmt: skip
    write_text_atomic(here / f"fresh_{regime}_top.yaml", top_text)
    print("\n".join(notes))
    print(f"wrote {here / f'fresh_{regime}.yaml'} and {here / f'fresh_{regime}_top.yaml'} (top: {', '.join(top)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
