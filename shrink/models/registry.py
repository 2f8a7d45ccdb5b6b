"""The vision model registry and ``build_model``, which records how a model was built so it can be saved.

Every builder has the signature ``builder(num_classes=10, in_channels=3, image_size=32, **kwargs)``.

Usage::

    model = build_model("resnet56", num_classes=100)
    model.shrink_spec  # {"name": "resnet56", "kwargs": {"num_classes": 100, "in_channels": 3, ...}}
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from shrink.errors import UserError
from shrink.registry import Registry

Builder = Callable[..., nn.Module]

MODELS: Registry[Builder] = Registry("model")


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` and record ``model.shrink_spec`` for saving.

    The recorded kwargs include the builder's defaults, so a saved spec does not depend on them.

    Usage: ``build_model("vit-micro", num_classes=7, in_channels=1)``
    """
    canonical = MODELS.canonical(name)
    builder = MODELS.get(canonical)
    signature = inspect.signature(builder)
    try:
        bound = signature.bind(**kwargs)
    except TypeError as err:
        options = ", ".join(signature.parameters)
        raise UserError(f"model '{canonical}': {err}; its options are: {options}") from None
    bound.apply_defaults()
    model = builder(**bound.arguments)
    model.shrink_spec = {"name": canonical, "kwargs": dict(bound.arguments)}
    return model
