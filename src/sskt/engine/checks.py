"""``check_config``: every name in a TrainConfig resolves before any data loads or network builds."""

from __future__ import annotations

from sskt.config import TrainConfig
from sskt.data import DATASETS
from sskt.errors import UserError, check_choice
from sskt.losses import AUX_LOSSES, PRIMARY_LOSSES
from sskt.methods import METHODS
from sskt.methods.sskt import ALPHA_SCHEDULES
from sskt.models import MODELS
from sskt.models.heads import HEAD_KINDS
from sskt.optim import SCHEDULES
from sskt.sources import SOURCES
from sskt.sources.cache import check_cache_config

PRECISIONS = ("32-true", "32", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")
AUGMENTS = ("default", "none")


def check_config(cfg: TrainConfig) -> None:
    """Raise a one-line UserError naming the first bad value and its valid choices."""
    _check_name("dataset", cfg.data.name, DATASETS)
    _check_name("model", cfg.model.name, MODELS)
    _check_name("method", cfg.method.name, METHODS)
    if cfg.sources:
        for source in cfg.sources:
            _check_name("source", source.name, SOURCES)
            check_choice("source bn_mode", source.bn_mode, ("eval", "train"))
    _check_baseline_names(cfg, MODELS)
    check_choice("head.kind", cfg.head.kind, HEAD_KINDS)
    check_choice("data.augment", cfg.data.augment, AUGMENTS)
    check_choice("method.aux_loss", cfg.method.aux_loss, AUX_LOSSES)
    check_choice("method.primary_loss", cfg.method.primary_loss, PRIMARY_LOSSES)
    check_choice("method.alpha_schedule", cfg.method.alpha_schedule, ALPHA_SCHEDULES)
    check_choice("optim.schedule", cfg.optim.schedule, SCHEDULES)
    check_choice("precision", str(cfg.precision), PRECISIONS)
    check_choice("accelerator", cfg.accelerator, ACCELERATORS)
    if cfg.cache.enabled:
        check_cache_config(cfg.cache, cfg.method.temperature)
    _check_positive(cfg)


def _check_baseline_names(cfg: TrainConfig, models) -> None:
    """The names only one method reads (DML peers, MAXL's generator, KD's teacher), checked before any work."""
    if cfg.method.name == "dml":
        for peer in cfg.method.dml.peers:
            _check_name("model (method.dml.peers)", peer, models)
    if cfg.method.name == "maxl" and cfg.method.maxl.generator is not None:
        _check_name("model (method.maxl.generator)", cfg.method.maxl.generator, models)
    if cfg.method.name == "kd":
        if cfg.method.kd.teacher is None:
            raise UserError("method 'kd' needs method.kd.teacher, e.g. checkpoint:runs/teacher (a trained run)")
        _check_name("source (method.kd.teacher)", cfg.method.kd.teacher, SOURCES)


def _check_name(kind: str, name: str, registry) -> None:
    if name not in registry:
        registry.get(name)  # raises the standard "unknown <kind> ...; valid choices: ..." error


def _check_positive(cfg: TrainConfig) -> None:
    for key, value in {
        "epochs": cfg.epochs,
        "eval_every": cfg.eval_every,
        "data.batch_size": cfg.data.batch_size,
        "data.eval_batch_size": cfg.data.eval_batch_size,
    }.items():
        if value < 1:
            raise UserError(f"{key} must be at least 1, got {value}")
    for key, value in {
        "data.labels_per_class": cfg.data.labels_per_class,
        "data.val_per_class": cfg.data.val_per_class,
    }.items():
        if value is not None and value < 1:
            raise UserError(f"{key} must be at least 1 or null, got {value}")
    if cfg.data.crop_padding < 0:
        raise UserError(f"data.crop_padding must be >= 0, got {cfg.data.crop_padding}")
