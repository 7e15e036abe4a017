"""Runs grouped by setting for the report: a ``Group`` is the runs that differ only in seed, named by its grid cell's
label (``<axis values>-seed<N>``) or by the setting keys that vary between the groups."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sskt.experiments.runs import Run

_SEED_SUFFIX = re.compile(r"^(?P<label>.+)-seed(?P<seed>-?\d+)$")


@dataclass
class Group:
    """Runs with the same setting (all config keys but seed and the non-setting ones)."""

    label: str
    setting: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    levels: dict[str, str] = field(default_factory=dict)
    """Value of each grid axis for this group (axis name -> value label), for the bar charts."""

    @property
    def method(self) -> str:
        return str(self.setting.get("method.name", ""))

    def metric(self, which: str, name: str) -> dict[int, float]:
        """``summary[which][name]`` per seed (``which`` is 'final', 'best' (chosen on validation) or
        'best_test_oracle'), skipping runs without it."""
        out = {}
        for r in self.runs:
            value = (r.summary.get(which) or {}).get(name)
            if isinstance(value, (int, float)):
                out[r.seed] = float(value)
        return out

    def field(self, name: str) -> list[float]:
        return [float(r.summary[name]) for r in self.runs if isinstance(r.summary.get(name), (int, float))]


# --- grouping --------------------------------------------------------------------------------------------------
def _freeze(setting: dict[str, Any]) -> str:
    return json.dumps(setting, sort_keys=True, default=str)


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group runs that differ only in seed (and non-setting keys); groups keep the order of their first run."""
    groups: dict[str, Group] = {}
    for run in runs:
        setting = run.setting()
        groups.setdefault(_freeze(setting), Group("", setting)).runs.append(run)
    out = list(groups.values())
    _label(out)
    return out


def varying_keys(groups: Sequence[Group]) -> list[str]:
    """Setting keys whose value differs between groups, in config order."""
    keys: list[str] = []
    for g in groups:
        keys += [k for k in g.setting if k not in keys]
    return [k for k in keys if len({_freeze({"v": g.setting.get(k)}) for g in groups}) > 1]


def _label(groups: list[Group]) -> None:
    """Name groups and their axis levels: from grid cell names (``<axis values>-seed<N>``) when every run has
    one, else from the setting keys that vary."""
    keys = varying_keys(groups)
    names = [{_cell_label(r) for r in g.runs} for g in groups]
    if all(len(n) == 1 and None not in n for n in names):
        labels = [n.pop() for n in names]
        parts = [label.split("-") for label in labels]
        if len({len(p) for p in parts}) == 1:
            axes = [_axis_name(groups, [p[i] for p in parts], keys, i) for i in range(len(parts[0]))]
            for g, label, p in zip(groups, labels, parts, strict=True):
                g.label, g.levels = label, dict(zip(axes, p, strict=True))
            return
    for g in groups:
        g.levels = {k: _short(g.setting.get(k)) for k in keys}
        g.label = ", ".join(f"{k}={v}" for k, v in g.levels.items()) or "all runs"


def _cell_label(run: Run) -> str | None:
    m = _SEED_SUFFIX.match(run.path.name)
    return m["label"] if m and int(m["seed"]) == run.seed else None


def _axis_name(groups: Sequence[Group], values: list[str], keys: list[str], i: int) -> str:
    """Name a grid axis by the varying config keys its value determines (``method.name+head.kind``)."""
    found = []
    for k in keys:
        seen: dict[str, str] = {}
        if all(seen.setdefault(v, _freeze({"v": g.setting.get(k)})) == _freeze({"v": g.setting.get(k)})
               for v, g in zip(values, groups, strict=True)) and len(set(values)) > 1:  # fmt: skip
            found.append(k)
    # sources[0].name and sources[0].bn_mode name one axis 'sources'; the method leads when it is among them
    found = list(dict.fromkeys(re.sub(r"\[\d+\].*$", "", k) for k in found))
    found.sort(key=lambda k: k != "method.name")
    if not found:
        return f"axis{i + 1}"
    # more than two keys: a coupled grid axis of named settings (the grid file's axis name is not in the runs)
    return "+".join(found) if len(found) <= 2 else "setting"


def _short(value: Any) -> str:
    return "-" if value is None else str(value)
