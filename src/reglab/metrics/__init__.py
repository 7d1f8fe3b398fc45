"""Metrics: the naming rules every layer shares (here), and the metric functions by task
(:mod:`.regression`: RMSE, MAE, pinball, CRPS, energy score; :mod:`.multilabel`: F1, thresholds).

A recorded metric is ``<split>_<name>`` (``val_accuracy``, ``test_rmse``). A run selects its best
epoch on a validation metric: by default :func:`default_metric` of its task; whether larger is
better follows from the name (:func:`metric_maximized`). This module imports nothing heavy, so the
report and the CLI use the same rule without loading torch.
"""
from __future__ import annotations

#: the validation metric that selects a run's best epoch when the configuration names none
DEFAULT_METRICS: dict[str, str] = {"classification": "val_accuracy", "multilabel": "val_f1_micro", "regression": "val_rmse"}


def default_metric(task: str) -> str:
    """The default selection metric of a task (``classification``, ``multilabel``, ``regression``)."""
    return DEFAULT_METRICS[task]


def recorded_default(recorded: set[str]) -> str:
    """The default selection metric of the task whose metrics were ``recorded`` (a run's metric names)."""
    return next((m for m in DEFAULT_METRICS.values() if m in recorded), "val_loss")


def metric_maximized(metric: str) -> bool:
    """Whether larger values of ``metric`` are better (losses, errors, RMSE, MAE and CRPS are minimized)."""
    return not any(word in metric for word in ("loss", "rmse", "mae", "error", "crps"))


def on_split(metric: str, split: str) -> str:
    """The same metric on another split: ``on_split("val_accuracy", "test")`` -> ``test_accuracy``."""
    return f"{split}_{metric.split('_', 1)[1]}"
