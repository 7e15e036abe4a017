"""Reading run directories: a finished run's flattened config, records and summary, and which config keys make
up its setting (the keys that change results)."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sskt.config import TrainConfig
from sskt.config_io import NON_SETTING_KEYS, flatten
from sskt.errors import UserError
from sskt.rundir import CONFIG, SUMMARY, RunDir


@dataclass
class Run:
    """One finished run directory."""

    path: Path
    config: dict[str, Any]
    """Flattened resolved config: dotted keys; lists of mappings as ``sources[0].name``."""
    records: list[dict[str, Any]]
    summary: dict[str, Any]

    @property
    def seed(self) -> int:
        return int(self.summary.get("seed", self.config.get("seed", 0)))

    def setting(self) -> dict[str, Any]:
        """Config keys that change results. Fields added to TrainConfig after a run was made take their default
        here: new fields are additive, so their default is what that run did."""
        merged = {**_default_config(), **self.config}
        return {k: _unseeded(v, self.seed) for k, v in merged.items() if k not in NON_SETTING_KEYS}


def slug(text: str) -> str:
    """``text`` as a file or folder name: runs of characters outside ``[A-Za-z0-9._+]`` become one ``_``."""
    return re.sub(r"[^A-Za-z0-9._+]+", "_", text).strip("_") or "_"


def _unseeded(value: Any, seed: int) -> Any:
    """A path naming the run's own seed (a grid's ``{seed}``, such as the KD teacher trained with the same seed:
    ``.../teacher-seed3``) is the same setting at every seed: write it back as ``seed{seed}``."""
    return re.sub(rf"seed{seed}(?!\d)", "seed{seed}", value) if isinstance(value, str) else value


@functools.cache
def _default_config() -> dict[str, Any]:
    """Today's TrainConfig defaults, flattened (scalar fields only; list-of-mapping defaults such as sources stay
    out, so a run's own list is never padded)."""
    flat = flatten(dataclasses.asdict(TrainConfig()), lists=True)
    return {k: v for k, v in flat.items() if not isinstance(v, list) or not v}


def load_run(path: Path) -> Run:
    """Read one run directory (it must hold ``summary.json`` and ``config.yaml``)."""
    run = RunDir(path)
    return Run(path, flatten(run.read_config_dict(), lists=True), run.read_records(), run.read_summary())


def collect_runs(roots: Sequence[Path]) -> tuple[list[Run], list[Path]]:
    """``find_runs`` over several folders: a run found twice counts once; a missing folder is a UserError."""
    runs: list[Run] = []
    unfinished: list[Path] = []
    seen: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            raise UserError(f"runs directory {str(root)!r} does not exist")
        found, left = find_runs(root)
        for run in found:
            if run.path.resolve() not in seen:
                seen.add(run.path.resolve())
                runs.append(run)
        unfinished += [p for p in left if p not in unfinished]
    return runs, unfinished


def find_runs(root: Path) -> tuple[list[Run], list[Path]]:
    """Finished runs under ``root`` (any depth), and the unfinished directories (a config but no summary that
    parses: an interrupted run, or a summary torn by a full disk)."""
    finished = [p.parent for p in sorted(root.rglob(SUMMARY)) if RunDir(p.parent).is_finished()]
    runs = [load_run(d) for d in finished if RunDir(d).config.exists()]
    unfinished = [p.parent for p in sorted(root.rglob(CONFIG)) if not RunDir(p.parent).is_finished()]
    return runs, unfinished


def provenance(runs: Sequence[Run]) -> list[str]:
    """Markdown lines: the git commits, the machines that timed the runs and the package versions they came from."""
    commits = sorted({str(r.summary.get("git_commit")) for r in runs})
    versions: dict[str, set[str]] = {}
    for r in runs:
        for pkg, v in (r.summary.get("versions") or {}).items():
            versions.setdefault(pkg, set()).add(str(v))
    machines = Counter(
        f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads, {m['accelerator']}" if m else "not recorded"
        for m in (r.summary.get("machine") for r in runs)
    )
    lines = [f"- git commits: {', '.join(c[:12] for c in commits)}"]
    lines.append("- machines (runs): " + "; ".join(f"{k} ({n})" for k, n in sorted(machines.items())))
    lines += [f"- {pkg}: {', '.join(sorted(vs))}" for pkg, vs in sorted(versions.items())]
    return lines
