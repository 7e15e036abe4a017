"""A trained network as a model-hub folder (Hugging Face's layout), and loading it back offline.

``sskt export RUN --format hf --out DIR`` writes three files, the layout timm's ``push_to_hf_hub`` and
``PyTorchModelHubMixin`` use:

- ``config.json``: the run's ``model.json`` in the hub's terms (``architecture``, ``num_classes``, ``label_names``,
  ``input_size`` as [C, H, W], ``mean``, ``std``, the card's ``fusion`` when present, how to prepare an image) and
  the card itself under ``sskt``, from which ``load_pretrained`` rebuilds the network;
- ``model.safetensors``: the run's own weights file, byte for byte;
- ``README.md``: a model card whose YAML metadata holds the library, tags, the license the user names, the dataset
  and ``model-index`` with the run's headline metric, or with ``--from-report`` the grid's mean +- std (n).

The folder is built in a temporary folder beside ``DIR``, reloaded and compared with the run's network on a sample
batch, and only then renamed to ``DIR``; an existing non-empty ``DIR`` is replaced only with ``--force``. Nothing
needs the network: uploading is the user's ``huggingface-cli upload <repo> DIR``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from sskt.errors import UserError
from sskt.inference import PARITY_TOLERANCE, RUN_FILES, refuse_non_finite, sample_batch, writable_parent
from sskt.rundir import CONFIG, RunDir
from sskt.trained import FORMAT, ModelCard, check_card, check_card_sources, load_trained, network, read_weights

CONFIG_JSON = "config.json"
WEIGHTS = "model.safetensors"
README = "README.md"
HUB_DATASETS = {
    "fashion_mnist": "zalando-datasets/fashion_mnist",
    "cifar10": "uoft-cs/cifar10",
    "cifar100": "uoft-cs/cifar100",
}
"""sskt dataset names -> their Hugging Face dataset ids, for the card's ``datasets``; other public datasets are
named as sskt names them, and a local image folder is named in no ``datasets`` field."""
METRIC_TYPES = {"acc": "accuracy", "video_acc": "accuracy", "map": "mean_average_precision", "ap": "average_precision"}


# --- loading ---------------------------------------------------------------------------------------------------
def load_pretrained(path: str | Path, trust_sources: bool = False) -> nn.Module:
    """The network of a folder ``sskt export --format hf`` wrote, in eval mode: images prepared as its
    ``config.json`` says, float ``[B, C, H, W]`` (``input_size``), to logits ``[B, num_classes]``. Offline. As for a
    run, a card's sources are followed only inside the folder unless ``trust_sources``."""
    path = Path(path)
    card, what = hub_card(path), f"model folder {str(path)!r}"
    if not trust_sources:
        check_card_sources(card, RunDir(path), what)
    state, _ = read_weights(path / WEIGHTS)
    return network(card, state, what)


def hub_card(path: str | Path) -> ModelCard:
    """The ``ModelCard`` kept under ``sskt`` in the folder's ``config.json``; a folder sskt did not write is one
    line."""
    file = Path(path) / CONFIG_JSON
    if not file.is_file():
        raise UserError(f"{str(path)!r} is not a model folder ({CONFIG_JSON} missing); write one with sskt export")
    try:
        raw = json.loads(file.read_text())["sskt"]
        known = {f.name for f in dataclasses.fields(ModelCard)}
        card = ModelCard(**{k: v for k, v in raw.items() if k in known})
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise UserError(f"{str(file)!r} holds no sskt model card ({type(exc).__name__}); was it written by "
                        "sskt export --format hf?") from exc  # fmt: skip
    if isinstance(card.format, int) and card.format > FORMAT:
        raise UserError(f"{str(file)!r} has card format {card.format}; this sskt reads up to {FORMAT} (upgrade sskt)")
    check_card(card, str(file))
    return card


# --- writing ---------------------------------------------------------------------------------------------------
def export_hf(
    run: str | Path,
    out: str | Path,
    force: bool = False,
    license: str | None = None,
    from_report: str | None = None,
    trust_sources: bool = False,
) -> dict:
    """Write the run's network as a hub folder ``out`` (see the module docstring) and return what was written."""
    out = check_out_dir(out, force, run)
    net, card = load_trained(run, trust_sources=trust_sources)
    if card.task == "video":
        raise UserError(f"--format hf takes image models; {str(run)!r} is a video model")
    result = headline(RunDir.containing(run), from_report)
    x = sample_batch(card)
    with torch.inference_mode():
        expected = net(x)
    refuse_non_finite(expected, f"run {str(run)!r}")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        write_folder(tmp, run, card, list(x.shape[1:]), card_text(card, RunDir.containing(run), result, license))
        diff = parity(tmp, x, expected, trust_sources)
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"format": "hf", "out": str(out), "max_abs_diff": diff, "files": [CONFIG_JSON, WEIGHTS, README]}


def check_out_dir(out: str | Path, force: bool, run: str | Path) -> Path:
    """``out`` as a folder the export may create or (with ``force``) replace: never a run directory, a folder
    holding the run, or a run's own file; an existing non-empty folder only with ``force``."""
    if not str(out).strip():
        raise UserError("--out is empty; give the folder to write, e.g. --out my-model")
    out, root = Path(out).expanduser(), RunDir.containing(run).root.resolve()
    resolved = out.resolve()
    if (resolved / CONFIG).is_file() or resolved == root or root.is_relative_to(resolved):
        raise UserError(f"--out {str(out)!r} would replace a run directory; write the model folder elsewhere")
    if resolved.is_relative_to(root) and resolved.relative_to(root).parts[0] in (*RUN_FILES, "checkpoints", "tb"):
        raise UserError(f"--out {str(out)!r} would replace the run file {str(resolved.relative_to(root))!r}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; --format hf writes a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--out {str(out)!r} exists and is not empty; pass --force to replace it, or pick another")
    return writable_parent(out)


def write_folder(tmp: Path, run: str | Path, card: ModelCard, input_size: list[int], readme: str) -> None:
    """The three files in ``tmp`` (a new folder), each fsynced."""
    tmp.mkdir()
    path = Path(run)
    shutil.copyfile(path if path.suffix == ".safetensors" else RunDir.containing(run).weights, tmp / WEIGHTS)
    (tmp / CONFIG_JSON).write_text(json.dumps(hub_config(card, input_size), indent=2) + "\n")
    (tmp / README).write_text(readme)
    for name in (WEIGHTS, CONFIG_JSON, README):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())


def hub_config(card: ModelCard, input_size: list[int]) -> dict[str, Any]:
    """``config.json``: the card in the hub's terms (timm's top-level names), how to prepare an image, and the card
    itself under ``sskt``."""
    config: dict[str, Any] = {
        "architecture": card.architecture,
        "num_classes": card.num_classes,
        "label_names": list(card.class_names),
        "input_size": input_size,
        "mean": card.mean,
        "std": card.std,
        "task": card.task,
        "library_name": "sskt",
        "preprocessing": {
            "resize": card.stored_size,
            "interpolation": "bilinear",
            "fit": f"centre zero-pad or centre crop to {card.input_size} x {card.input_size}",
            "scale": "pixels / 255",
            "channels": "grey replicated to 3" if card.channels == 1 else "RGB",
            "normalize": "(x - mean) / std per channel",
        },
    }
    if card.fusion:
        config["fusion"] = card.fusion
    return config | {"sskt": dataclasses.asdict(card)}


def parity(folder: Path, x: torch.Tensor, expected: torch.Tensor, trust_sources: bool) -> float:
    """Reload ``folder`` and return its largest logit difference against the run's network on ``x``; above
    ``PARITY_TOLERANCE`` is a UserError (nothing is published)."""
    with torch.inference_mode():
        got = load_pretrained(folder, trust_sources)(x)
    diff = float((got - expected).abs().max())
    if not math.isfinite(diff) or diff > PARITY_TOLERANCE:
        raise UserError(f"hf export differs from the run by {diff:.3g} (> {PARITY_TOLERANCE}); nothing written")
    return diff


def publish(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` (checked, or forced) is moved aside first and removed after."""
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the model card --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
    """The figure the card reports: the headline metric of one run, or a grid's mean +- std over n seeds."""

    metric: str
    value: float
    which: str
    """'final' (the last epoch) or 'best' (the epoch the validation split chose)."""
    std: float | None = None
    n: int = 1

    def text(self) -> str:
        spread = f" +- {self.std:.2f} (n={self.n})" if self.std is not None else ""
        epoch = "the validation-chosen epoch" if self.which == "best" else "the final epoch"
        return f"{self.metric} {self.value:.2f}{spread} at {epoch}"


def headline(run: RunDir, from_report: str | None) -> Result:
    """The run's headline metric (validation-chosen epoch when the run has one, else final); with ``from_report``,
    the report row of the run's group."""
    if not run.is_finished():
        raise UserError(f"run {str(run.root)!r} has not finished (no summary.json); nothing to report in its card")
    summary = run.read_summary()
    metric = summary.get("headline", "test_acc")
    which = "best" if summary.get("selected_by") else "final"
    if from_report:
        return report_result(run, Path(from_report), metric, which)
    return Result(metric, float(summary[which][metric]), which)


def report_result(run: RunDir, report: Path, metric: str, which: str) -> Result:
    """The grid's mean +- std (n) of ``metric`` for the run's group, from ``report/report.csv``; the group is found
    by grouping the finished runs under ``report`` as the report did."""
    import csv

    # The report's machinery imports matplotlib: only for --from-report, so that load_pretrained stays light.
    from sskt.experiments.report import group_runs
    from sskt.experiments.runs import collect_runs

    table = report / "report.csv"
    if not table.is_file():
        raise UserError(f"--from-report {str(report)!r} has no report.csv (write it with sskt report)")
    groups = group_runs(collect_runs([report])[0])
    mine = [g.label for g in groups if any(r.path.resolve() == run.root.resolve() for r in g.runs)]
    if not mine:
        raise UserError(f"run {str(run.root)!r} is not among the finished runs under --from-report {str(report)!r}")
    with open(table, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("group") == mine[0]]
    n = int(float(rows[0].get(f"{which}_{metric}_n") or 0)) if rows else 0
    if not n:
        raise UserError(f"{str(table)!r} has no {which} {metric} for the run's group {mine[0]!r}; rerun sskt report")
    row = rows[0]
    return Result(metric, float(row[f"{which}_{metric}_mean"]), which, float(row[f"{which}_{metric}_std"]), n)


def card_text(card: ModelCard, run: RunDir, result: Result, license: str | None) -> str:
    """``README.md``: YAML metadata (library, tags, license, datasets, model-index), then what the model is, how to
    load it and how to upload the folder."""
    cfg = run.read_config_dict()
    meta = card_metadata(card, cfg, result, license, run.root.name)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n{card_body(card, cfg, result, license)}"


def card_metadata(card: ModelCard, cfg: dict, result: Result, license: str | None, name: str) -> dict[str, Any]:
    """The card's YAML metadata (Hugging Face's model-card fields); ``name`` names the model in ``model-index``."""
    if license is not None and (not license.strip() or "\n" in license):
        raise UserError(f"--license must be one line naming a license (e.g. mit, apache-2.0), got {license!r}")
    data = cfg.get("data", {}).get("name", "")
    split, _, short = result.metric.partition("_")
    metric = {"type": METRIC_TYPES.get(short, short), "value": round(result.value, 4), "name": result.text()}
    meta: dict[str, Any] = {
        "library_name": "sskt",
        "license": license or "unknown",
        "pipeline_tag": "image-classification",
        "tags": ["sskt", "image-classification", card.method, card.architecture.removeprefix("timm:")],
    }
    if data != "imagefolder":
        meta["datasets"] = [HUB_DATASETS.get(data, data)]
    dataset = {"name": data, "type": HUB_DATASETS.get(data, data), "split": split}
    task = {"type": "image-classification", "name": "Image Classification"}
    results = [{"task": task, "dataset": dataset, "metrics": [metric]}]
    meta["model-index"] = [{"name": name, "results": results}]
    return meta


def card_body(card: ModelCard, cfg: dict, result: Result, license: str | None) -> str:
    """The Markdown below the card's metadata, for a reader who has only the folder: what was trained (architecture,
    method, frozen sources, data, epochs, seed, the first ten class names), its ``result``, the two lines that load
    it with ``sskt.load_pretrained``, how an input must be prepared (size, resize, padding, scaling, normalisation:
    a network fed differently prepared images gives wrong answers silently), the license, and the upload command,
    since sskt itself never uses the network."""
    sources = ", ".join(s.get("name", "?") for s in cfg.get("sources") or []) or "none"
    lines = [
        f"# {card.architecture} ({card.method}) on {cfg.get('data', {}).get('name', '?')}",
        "",
        f"Trained with sskt, method `{card.method}` (frozen sources: {sources}), "
        f"epochs {cfg.get('epochs')}, seed {cfg.get('seed')}. {card.num_classes} classes: "
        f"{', '.join(card.class_names[:10])}{' ...' if len(card.class_names) > 10 else ''}.",
        "",
        f"Result: {result.text()}.",
        "",
        "## Use",
        "",
        "```python",
        "import sskt",
        "",
        'net = sskt.load_pretrained("path/to/this/folder")  # torch.nn.Module in eval mode',
        "logits = net(images)  # images prepared as config.json's 'preprocessing' says",
        "```",
        "",
        f"Input: float images [B, 3, {card.input_size}, {card.input_size}]: resized to {card.stored_size} "
        "(bilinear), centre-padded or cropped, scaled to [0, 1], normalised with config.json's mean and std.",
        "",
        f"License: {license or 'not set (sskt export --license NAME sets it)'}.",
        "",
        "## Upload",
        "",
        "`huggingface-cli upload <user>/<repo> path/to/this/folder` (sskt itself never uses the network).",
        "",
    ]
    return "\n".join(lines)
