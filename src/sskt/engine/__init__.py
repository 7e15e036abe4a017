"""The training engine: ``train(cfg)``, ``evaluate(run_dir)``, ``check_config(cfg)``."""

from sskt.engine.checks import check_config
from sskt.engine.evaluate_run import evaluate
from sskt.engine.loop import train

__all__ = ["check_config", "evaluate", "train"]
