"""Trained networks: the one place that knows how a finished run's network is saved and loaded.

A run ships two files beside its ``config.yaml``: ``model.safetensors``, the weights of the network inference needs
(the target without its auxiliary heads, or a probe's frozen source with its classifier), and ``model.json``, the
``ModelCard``: what using those weights needs besides them. ``save_trained`` writes both; ``load_trained`` reads them
back as a module mapping images normalised as the card says, ``[B, 3, S, S]``, to logits ``[B, num_classes]``. Its
callers are ``sskt predict``/``export`` (``sskt.inference``), ``evaluate`` and ``checkpoint:`` sources. Nothing in
either file executes: safetensors and plain JSON.

Below the engine, above models and sources, and naming no method: a method adds its own card fields (the probe's
``architecture`` and ``source``) through ``card_fields(cfg)``, which the engine passes to ``model_card``. A run
finished before sskt wrote the card gets one derived from its ``config.yaml`` and its dataset (read without
downloading); its weights tell a probe from a target.

Growing the card: a field with a default reads as that default from older cards. A field that changes the network
(say a second head fused with the first by weights chosen after training) is applied in ``network`` and raises
``FORMAT``, so an older sskt refuses the card instead of silently building another network.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor, nn

from sskt import __version__
from sskt.config import HeadConfig, ModelConfig, TrainConfig
from sskt.data import build_dataset
from sskt.data.datasets import stored_shape
from sskt.data.spec import DatasetSpec
from sskt.errors import UserError
from sskt.files import write_atomic, write_text_atomic
from sskt.models import build_target
from sskt.models.fused import FusedHeads
from sskt.models.target import AUX_PREFIX
from sskt.rundir import MODEL_CARD, RunDir
from sskt.sources.probe import PROBE, is_probe_state, probe_from_run
from sskt.sources.weights import State, load_into

FORMAT = 2
"""The newest card format this version reads; a newer one is refused. 1: one head. 2: ``fusion`` (two heads fused),
written only by runs that fuse, so their cards are refused by an sskt that would build one head."""


@dataclass
class ModelCard:
    """The facts about a trained network that its weights do not hold."""

    architecture: str
    """``model.name`` of the target, or 'probe' (a linear classifier on ``source``'s frozen features)."""
    task: str
    """'single_label' (softmax over classes), 'multi_label' (a sigmoid per class) or 'video'."""
    num_classes: int
    class_names: list[str]
    mean: list[float]
    """Per-channel normalisation on [0, 1] pixels, 3 channels."""
    std: list[float]
    input_size: int
    """Side of the square image the network sees."""
    stored_size: list[int]
    """(H, W) images are resized to first (the dataset's stored size), before the centre pad or crop to
    ``input_size`` of evaluation."""
    channels: int
    """Channels of the stored images: 1 (grey, replicated to 3) or 3."""
    method: str = "scratch"
    source: dict[str, Any] | None = None
    """The probe's source (a SourceConfig as a mapping); None otherwise."""
    sskt_version: str = ""
    format: int = 1
    fusion: dict[str, Any] | None = None
    """Two heads fused into the prediction (``sskt.models.fused``): ``{"head": aux head key, "a": float, "beta":
    float}``; the weights then hold that auxiliary head. None: the primary head alone."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Facts that build nothing (a clip model's ``clip_len``)."""


def write_card(path: str | Path, card: ModelCard) -> None:
    write_text_atomic(Path(path), json.dumps(dataclasses.asdict(card), indent=2) + "\n")


def read_card(path: str | Path) -> ModelCard:
    """Read ``model.json``; a missing, unparsable, foreign or newer file is a one-line UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{str(path)!r} does not exist (runs finished before sskt wrote {MODEL_CARD} lack it)")
    try:
        raw = json.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(ModelCard)}
        card = ModelCard(**{k: v for k, v in raw.items() if k in known})
    except (json.JSONDecodeError, TypeError, AttributeError, RecursionError) as exc:
        raise UserError(f"{str(path)!r} is not an sskt model card ({type(exc).__name__}: {exc})") from exc
    if isinstance(card.format, int) and not isinstance(card.format, bool) and card.format > FORMAT:
        raise UserError(f"{str(path)!r} has card format {card.format}; this sskt reads up to {FORMAT} (upgrade sskt)")
    check_card(card, str(path))
    return card


# --- the card's schema -----------------------------------------------------------------------------------------
TASKS = ("single_label", "multi_label", "video")
MAX_CLASSES = 1_000_000
MAX_SIDE = 4096
"""Bounds a real card stays far inside; beyond them a card builds a network or buffer that exhausts memory."""


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _numbers(value: object, count: int, positive: bool = False) -> bool:
    ok = isinstance(value, list) and len(value) == count
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    return ok and (not positive or all(v > 0 for v in value))


def card_problems(card: ModelCard) -> list[str]:
    """``"field: what is wrong"`` for every field of ``card`` outside its schema (types and bounds)."""
    c = card
    checks = {
        "architecture": (isinstance(c.architecture, str) and c.architecture != "", "a non-empty string"),
        "task": (c.task in TASKS, f"one of {', '.join(TASKS)}"),
        "num_classes": (_int_in(c.num_classes, 1, MAX_CLASSES), f"an integer from 1 to {MAX_CLASSES}"),
        "class_names": (
            isinstance(c.class_names, list)
            and all(isinstance(n, str) for n in c.class_names)
            and len(c.class_names) in (0, c.num_classes if _int_in(c.num_classes, 1, MAX_CLASSES) else -1),
            "a list of num_classes strings (or [])",
        ),
        "mean": (_numbers(c.mean, 3), "3 finite numbers"),
        "std": (_numbers(c.std, 3, positive=True), "3 positive numbers"),
        "input_size": (_int_in(c.input_size, 1, MAX_SIDE), f"an integer from 1 to {MAX_SIDE}"),
        "stored_size": (
            isinstance(c.stored_size, list)
            and len(c.stored_size) == 2
            and all(_int_in(v, 1, MAX_SIDE) for v in c.stored_size),
            f"[height, width], integers from 1 to {MAX_SIDE}",
        ),  # fmt: skip
        "channels": (c.channels in (1, 3) and not isinstance(c.channels, bool), "1 or 3"),
        "method": (isinstance(c.method, str), "a string"),
        "source": (c.source is None or isinstance(c.source, dict), "null or a source mapping"),
        "sskt_version": (isinstance(c.sskt_version, str), "a string"),
        "format": (_int_in(c.format, 1, FORMAT), f"an integer from 1 to {FORMAT}"),
        "fusion": (c.fusion is None or _fusion_ok(c.fusion), 'null or {"head": str, "a": 0..1, "beta": > 0}'),
        "extra": (isinstance(c.extra, dict), "a mapping"),
    }
    return [f"{name} {getattr(c, name)!r:.60} (must be {want})" for name, (ok, want) in checks.items() if not ok]


def _fusion_ok(fusion: object) -> bool:
    if not isinstance(fusion, dict) or not isinstance(fusion.get("head"), str):
        return False
    a, beta = fusion.get("a"), fusion.get("beta")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, beta))
    return numbers and 0 <= a <= 1 and math.isfinite(beta) and beta > 0


def check_card(card: ModelCard, what: str) -> None:
    """A one-line UserError naming the first fields of ``card`` outside the schema: a card is input, and a bad one
    must not become a traceback, a huge allocation or a network other than the one its weights hold."""
    problems = card_problems(card)
    if problems:
        more = f" (+{len(problems) - 2} more)" if len(problems) > 2 else ""
        raise UserError(f"model card {what!r}: {'; '.join(problems[:2])}{more}")


def model_card(cfg: TrainConfig, spec: DatasetSpec, fields: Mapping[str, Any]) -> ModelCard:
    """The card of a run of ``cfg`` on ``spec``: the target's by default, with the method's own ``fields`` over it
    (``card_fields(cfg)``: a probe names its architecture and its source)."""
    shape = stored_shape(spec.train)  # (C, H, W), or (C, T, H, W) for clips
    card = ModelCard(
        architecture=cfg.model.name,
        task=spec.task,
        num_classes=spec.num_classes,
        class_names=list(spec.class_names),
        mean=[float(v) for v in spec.mean],
        std=[float(v) for v in spec.std],
        input_size=int(spec.image_size),
        stored_size=[int(shape[-2]), int(shape[-1])],
        channels=int(shape[0]),
        method=cfg.method.name,
        sskt_version=__version__,
        extra={"clip_len": int(shape[1])} if len(shape) == 4 else {},
    )
    card = dataclasses.replace(card, **fields)
    return dataclasses.replace(card, format=2) if card.fusion else card


# --- weights ---------------------------------------------------------------------------------------------------
def strip_aux(state: State) -> State:
    """``state`` without a Target's auxiliary heads: they play no part in the primary logits."""
    return {k: v for k, v in state.items() if not k.startswith(AUX_PREFIX)}


def save_trained(net: nn.Module, card: ModelCard, run: RunDir, trained_aux: Mapping[str, int] | None = None) -> None:
    """Write ``net`` without its auxiliary heads (they stay in the training checkpoint) as ``run``'s
    ``model.safetensors``, then ``card`` as its ``model.json``. The metadata's ``aux_classes`` is the heads the file
    holds ({}); ``trained_aux_classes`` the heads training had."""
    # Clone: safetensors refuses tensors that share storage (tied or viewed parameters).
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in shipped_state(net, card).items()}
    held = {card.fusion["head"]: card.num_classes} if card.fusion else {}
    meta = {"aux_classes": json.dumps(held), "trained_aux_classes": json.dumps(dict(trained_aux or {}))}
    write_atomic(run.weights, lambda f: f.write(save(tensors, metadata=meta)))
    write_card(run.model_card, card)


def shipped_state(net: nn.Module, card: ModelCard) -> State:
    """What ``model.safetensors`` holds of ``net``: its state without the auxiliary heads, except the head that
    ``card.fusion`` fuses (then ``net`` is the fused module and its target's state is saved)."""
    if not card.fusion:
        return strip_aux(net.state_dict())
    target = net.target
    kept = f"{AUX_PREFIX}{target.aux_keys[card.fusion['head']]}."
    return {k: v for k, v in target.state_dict().items() if not k.startswith(AUX_PREFIX) or k.startswith(kept)}


def read_weights(path: str | Path) -> tuple[State, dict[str, int]]:
    """Read a ``model.safetensors``: the state dict and the auxiliary heads' class counts it holds."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {str(path)!r} does not exist (has the run finished?)")
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for foreign or truncated files
        raise UserError(f"weights file {str(path)!r} cannot be read: {type(exc).__name__}") from exc
    return state, json.loads(meta.get("aux_classes", "{}"))


# --- networks --------------------------------------------------------------------------------------------------
class Logits(nn.Module):
    """A classifier as a plain ``images -> logits`` module (the auxiliary heads, if any, are not run); ``net`` is
    the network as built."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x, with_aux=False) if hasattr(self.net, "aux_keys") else self.net(x)
        return out if isinstance(out, Tensor) else out.logits


def num_classes(state: State, what: str) -> int:
    """The rows of the primary classifier ``fc`` (every network sskt ships has one)."""
    weight = state.get("fc.weight")
    if weight is None or weight.dim() != 2:
        raise UserError(f"{what}: the weights have no primary classifier 'fc.weight' [num_classes, features]")
    return int(weight.shape[0])


def build_network(
    architecture: str, source: dict | None, stats: tuple[Sequence[float], Sequence[float]], state: State, what: str
) -> Logits:
    """The network ``architecture`` names with ``state`` loaded (auxiliary heads dropped), for images normalised
    with ``stats`` (mean, std): a probe on ``source``, else a target model."""
    state, classes = strip_aux(state), num_classes(state, what)
    if architecture == PROBE:
        if not source:
            raise UserError(f"{what}: a probe run names no source")
        return Logits(probe_from_run(source, stats, state, what))
    net = build_target(ModelConfig(name=architecture), classes, {}, HeadConfig())
    return Logits(load_into(net, state, what))


_DEPTH = [0]
"""How many ``network`` builds are under way in this thread's call stack: a probe whose source is a ``checkpoint:``
run builds that run's network in turn, and a card naming its own run would never end."""
MAX_DEPTH = 8


def network(card: ModelCard, state: State, what: str) -> Logits:
    """The network ``card`` describes, with ``state`` loaded, in eval mode."""
    if card.num_classes != num_classes(state, what) and not card.fusion:
        raise UserError(f"{what}: the card says num_classes {card.num_classes}, the weights hold "
                        f"{num_classes(state, what)}; the card does not belong to these weights")  # fmt: skip
    if _DEPTH[0] >= MAX_DEPTH:
        raise UserError(
            f"{what}: sources of sources nest over {MAX_DEPTH} deep (a checkpoint: source naming its own run?)"
        )
    _DEPTH[0] += 1
    try:
        if card.fusion:
            return fused_network(card, state, what).eval()
        return build_network(card.architecture, card.source, (card.mean, card.std), state, what).eval()
    finally:
        _DEPTH[0] -= 1


def check_card_sources(card: ModelCard, run: RunDir, what: str) -> None:
    """Refuse a card whose source would read a file outside its run directory or fetch a URL the card chose (a
    ``checkpoint:`` path, ``weights``): a downloaded run directory must not make ``predict`` read or fetch what it
    names. A zoo name without ``weights`` reads the zoo's own weights and passes; ``--trust_sources`` skips this."""
    source = card.source or {}
    name, weights = str(source.get("name", "")), source.get("weights")
    named = [name.removeprefix("checkpoint:")] if name.startswith("checkpoint:") else []
    named += [str(weights)] if weights is not None else []
    root = run.root.resolve()
    for target in named:
        if "://" in target:
            outside = True
        else:
            path = (run.root / Path(target).expanduser()).resolve()
            outside = root not in path.parents or path == run.weights.resolve()
        if outside:
            raise UserError(
                f"{what}: its model card's source reads {target!r}, outside the run directory (or the run itself); "
                "sskt follows a card's sources only inside its run: pass --trust_sources if you trust this run"
            )


def fused_network(card: ModelCard, state: State, what: str) -> Logits:
    """A target with the auxiliary head ``card.fusion`` names, its two heads fused as the card says."""
    fusion = card.fusion
    heads = {fusion["head"]: card.num_classes}
    net = build_target(ModelConfig(name=card.architecture), num_classes(state, what), heads, HeadConfig(kind="linear"))
    load_into(net, state, what)
    return Logits(FusedHeads(net, fusion["head"], fusion["a"], fusion["beta"]))


def legacy_fields(model_name: str, sources: Sequence[Mapping] | None, state: State, what: str) -> dict[str, Any]:
    """``architecture`` and ``source`` of a run without a card: its weights tell a probe (its frozen source is
    saved with the classifier) from a target, so no method is asked."""
    if not is_probe_state(state):
        return {"architecture": model_name, "source": None}
    if not sources:
        raise UserError(f"{what}: a probe run's config has no sources")
    return {"architecture": PROBE, "source": sources[0]}


def card_of(run: RunDir, state: State) -> ModelCard:
    """The run's ``model.json``, or for an older run one derived from its config and its dataset."""
    if run.model_card.is_file():
        return read_card(run.model_card)
    cfg = run.read_config()
    cfg.data.download = False
    sources = [dataclasses.asdict(s) for s in cfg.sources]
    return model_card(cfg, build_dataset(cfg.data), legacy_fields(cfg.model.name, sources, state, str(run.root)))


def load_trained(path: str | Path, trust_sources: bool = False) -> tuple[Logits, ModelCard]:
    """The trained network of the run directory ``path`` (or of a ``.safetensors`` file in it), in eval mode, and
    its card. The card's sources are followed only inside the run directory unless ``trust_sources``."""
    path, run = Path(path), RunDir.containing(path)
    state, _ = read_weights(path if path.suffix == ".safetensors" else run.weights)
    card = card_of(run, state)
    what = f"run {str(run.root)!r}"
    if not trust_sources:
        check_card_sources(card, run, what)
    return network(card, state, what), card
