"""Experiment trackers for ``--report-to tensorboard,wandb,mlflow``, through Accelerate's tracking API.

The engine logs the training loss and learning rate every few steps and the dev metrics every epoch to
each tracker named in ``train.report_to``; TensorBoard and MLflow write beside the run (``RUN/logs``),
Weights & Biases where its own settings say (``WANDB_MODE=offline`` works without a network).

Usage::

    check_trackers(["tensorboard"])    # UserError naming the package to install when one is missing
    accelerator.init_trackers("teacher", config=hyperparameters(train_config))
"""
from __future__ import annotations

import importlib.util
from typing import Any, Sequence

from pydantic import BaseModel

from shrink.errors import UserError

# tracker name -> the importable packages that provide it (any one is enough)
TRACKER_PACKAGES: dict[str, tuple[str, ...]] = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
}
LOGS_FOLDER = "logs"


def check_trackers(names: Sequence[str]) -> None:
    """UserError for a tracker whose package is not installed. Usage: ``check_trackers(config.report_to)``."""
    for name in names:
        packages = TRACKER_PACKAGES[name]
        if not any(importlib.util.find_spec(package) for package in packages):
            raise UserError(f"--report-to {name} needs the '{packages[0]}' package: pip install {packages[0]}")


def hyperparameters(config: BaseModel) -> dict[str, Any]:
    """``config``'s keys with the scalar values trackers accept (anything else, lists and None, as text).

    Usage: ``hyperparameters(TrainConfig())["lr"]``
    """
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value)
            for key, value in config.model_dump().items()}
