"""``create_model``: the one entry point the CLIs use to turn a model name or directory into a model.

Resolution: a vision model name; a Hugging Face preset or alias; a local directory with
``architecture.json`` (shrink model) or ``config.json`` (Hugging Face); an ``org/name`` hub id. Anything
else is a UserError naming the closest known model.

Usage::

    model, tokenizer = create_model("resnet56", num_classes=10)        # tokenizer is None
    model, tokenizer = create_model("tinybert", num_classes=2)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, BertConfig, PretrainedConfig, PreTrainedTokenizerBase

from shrink.errors import UserError
from shrink.models.hf import (HF_ALIASES, HF_PRESETS, OFFLINE_FALLBACKS, TokenizerSource, is_hf_name,
                              load_hf_classifier)
from shrink.models.io import HF_CONFIG_FILE, SPEC_FILE, load_model, local_dir, read_spec, saved_kind
from shrink.models.registry import MODELS, build_model
from shrink.registry import Registry
from shrink.runs import refuse_unfinished


def create_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    is_regression: bool = False,
    tokenizer_fallback: TokenizerSource = None,
    **kwargs: Any,
) -> tuple[nn.Module, PreTrainedTokenizerBase | None]:
    """A model (and its tokenizer, None for vision models) for ``name``, sized for the task.

    ``kwargs`` go to the vision builder (e.g. ``patch_size``, ``depth``). Usage:
    ``model, _ = create_model("vit-micro", num_classes=7, in_channels=1, image_size=28, patch_size=4)``
    """
    if name in MODELS or name.lower() in MODELS:
        vision = build_model(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)
        return vision, None
    # Known HF names win over a same-named folder in the working directory (write ./name for the folder).
    directory = None if is_hf_name(name) else local_dir(name)
    if directory is not None:
        refuse_unfinished(directory)
    if directory is not None and saved_kind(directory) == "torch":
        saved_classes = read_spec(directory)["kwargs"].get("num_classes")
        if saved_classes not in (None, num_classes):
            raise UserError(f"the model in {directory} has {saved_classes} classes but the data has {num_classes}")
        return load_model(directory), None
    if directory is None and not is_hf_name(name) and "/" not in name:
        raise UserError(f"{_all_models().unknown_message(name)}; or pass a hub id 'org/name' or a local directory")
    if kwargs:
        raise UserError(f"options {sorted(kwargs)} apply to vision models only, not to the Hugging Face model '{name}'")
    source = str(directory) if directory is not None else name
    return load_hf_classifier(source, num_classes, is_regression=is_regression, tokenizer_fallback=tokenizer_fallback)


def model_modality(name: str) -> str | None:
    """``"image"`` or ``"text"``: what ``name`` reads, when that is known without loading it (else None).

    Usage: ``model_modality("resnet20") == "image"``
    """
    if name in MODELS or name.lower() in MODELS:
        return "image"
    if is_hf_name(name):
        return "text"
    path = Path(name).expanduser()
    if path.is_dir() and any((path / marker).is_file() for marker in (SPEC_FILE, HF_CONFIG_FILE)):
        return "image" if saved_kind(path) == "torch" else "text"
    return None


def _all_models() -> Registry[str]:
    """Every model name (vision, presets, aliases) in one registry, for its unknown-name message."""
    known: Registry[str] = Registry("model")
    for name in (*MODELS.names(), *HF_PRESETS.names(), *HF_ALIASES):
        known.add(name, name)
    return known


def model_catalog() -> list[dict[str, Any]]:
    """One row per known model for ``shrink models``: name, family, parameters (None: unknown offline), needs.

    Sizes are counted on the meta device, so listing builds nothing in memory and downloads nothing.
    Usage: ``[row["name"] for row in model_catalog()]``
    """
    rows = [{"name": name, "family": "zoo", "params": _meta_params(lambda: build_model(name, num_classes=10)),
             "needs": "offline: random init (size at 10 classes)"}
            for name in MODELS.names()]
    rows += [{"name": name, "family": "hf preset",
              "params": _meta_params(lambda: AutoModel.from_config(BertConfig(**HF_PRESETS.get(name)))),
              "needs": "offline: a BERT shape at random init (size with the bert-base-uncased vocabulary)"}
             for name in HF_PRESETS.names()]
    for alias in sorted(HF_ALIASES):
        target = HF_ALIASES[alias]
        config = _local_config(target)
        local = Path(target).is_dir()
        rows.append({"name": alias, "family": "hf alias",
                     "params": _meta_params(lambda: AutoModel.from_config(config)) if config is not None else None,
                     "needs": "offline: installed locally" if local else
                              f"needs the Hub or its cache ({target}), or a local directory in its place"})
    return rows


def _local_config(target: str) -> PretrainedConfig | None:
    """The config of a hub id or directory when it is on this machine (cache, folder or known shape)."""
    if target in OFFLINE_FALLBACKS:
        return BertConfig(**OFFLINE_FALLBACKS[target])
    try:
        return AutoConfig.from_pretrained(target, local_files_only=True)
    except (OSError, ValueError):
        return None


def _meta_params(build: Callable[[], nn.Module]) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())
