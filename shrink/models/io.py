"""Save and load models without pickle.

A plain torch model (built by ``build_model``) is saved as ``model.safetensors`` plus ``architecture.json``
(format tag, registry name, builder kwargs, the constructor arguments of every width-carrying layer and the
shape of every tensor), so pruned widths rebuild. A Hugging Face model is saved with ``save_pretrained``
(safetensors) so plain ``transformers`` loads it (pruned attention heads as zero heads listed in
``config.pruned_heads``, cut out again on loading: :mod:`shrink.models.heads`). Both are written through
``atomic_dir``.

Usage::

    save_model(model, "runs/r56/model")
    model = load_model("runs/r56/model")
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PreTrainedModel

from shrink.errors import UserError
from shrink.models.heads import expand_pruned_heads, remove_pruned_heads
from shrink.models.registry import build_model
from shrink.models.resize import layer_args, resize_to
from shrink.runs import atomic_dir, atomic_write_json

FORMAT = "shrink.torch/1"
WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "architecture.json"
HF_CONFIG_FILE = "config.json"
SPEC_KEYS = {"format", "name", "kwargs", "layers", "tensors"}


def local_dir(name: str) -> Path | None:
    """``name`` as an existing local directory, None when it is not a path at all; UserError for a
    path-looking name that does not exist. Usage: ``local_dir("runs/r56/model")``
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError(f"'{name}' is not an existing model directory; pass a directory that holds a saved model")
    return None


def save_model(model: nn.Module, directory: str | os.PathLike, tokenizer: Any = None) -> Path:
    """Save ``model`` (and ``tokenizer`` if given) into ``directory``, atomically; returns the directory.

    Usage: ``save_model(build_model("resnet20"), "out/model")``
    """
    final = Path(directory)
    if not isinstance(model, PreTrainedModel) and not hasattr(model, "shrink_spec"):
        raise ValueError("save_model needs a Hugging Face model or one built by shrink.models.build_model")
    with atomic_dir(final) as tmp:
        if isinstance(model, PreTrainedModel):  # pruned heads as zero heads: plain transformers loads it
            expand_pruned_heads(model).save_pretrained(tmp)
        else:
            atomic_write_json(tmp / SPEC_FILE, architecture_spec(model))
            safetensors.torch.save_model(model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return final


def architecture_spec(model: nn.Module) -> dict[str, Any]:
    """The JSON spec that rebuilds ``model`` at its current (possibly pruned) widths.

    Usage: ``architecture_spec(build_model("resnet20"))["name"] == "resnet20"``
    """
    spec = model.shrink_spec
    return {
        "format": FORMAT,
        "name": spec["name"],
        "kwargs": spec["kwargs"],
        "layers": layer_args(model),
        "tensors": {name: list(tensor.shape) for name, tensor in model.state_dict().items()},
    }


def read_spec(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``architecture.json`` of a saved plain torch model; UserError when unreadable.

    Usage: ``read_spec("out/model")["kwargs"]["num_classes"]``
    """
    path = Path(directory) / SPEC_FILE
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}; save the model again with shrink") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT or not SPEC_KEYS <= set(spec):
        raise UserError(f"{path} is not a '{FORMAT}' architecture spec with keys {sorted(SPEC_KEYS)}; save it again")
    return spec


def load_model(directory: str | os.PathLike) -> nn.Module:
    """Load a model saved by :func:`save_model` (plain torch or Hugging Face); never unpickles.

    Usage: ``model = load_model("runs/r56/model")``
    """
    path = Path(directory)
    return _load_torch(path) if saved_kind(path) == "torch" else _load_hf(path)


def saved_kind(directory: Path) -> str:
    """``"torch"`` (architecture.json) or ``"hf"`` (config.json) for a saved model folder; else UserError.

    Usage: ``saved_kind(Path("out/model")) == "torch"``
    """
    if (directory / SPEC_FILE).exists():
        return "torch"
    if (directory / HF_CONFIG_FILE).exists():
        return "hf"
    raise UserError(f"{directory} holds neither {SPEC_FILE} (shrink model) nor {HF_CONFIG_FILE} (Hugging Face model)")


def _load_torch(path: Path) -> nn.Module:
    spec = read_spec(path)
    try:
        model = build_model(spec["name"], **spec["kwargs"])
        resize_to(model, spec["layers"], spec["tensors"])
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as err:  # a hand-edited spec
        raise UserError(f"{path / SPEC_FILE} does not describe a model that can be built ({type(err).__name__}: "
                        f"{error_line(err)}); save the model again") from None
    try:
        safetensors.torch.load_model(model, str(path / WEIGHTS_FILE), strict=True)
    except (OSError, RuntimeError, safetensors.SafetensorError) as err:
        raise UserError(
            f"cannot load weights from {path / WEIGHTS_FILE}: {error_line(err)}; save the model again"
        ) from None
    return model


def _load_hf(path: Path) -> PreTrainedModel:
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        is_classifier = any(arch.endswith("ForSequenceClassification") for arch in config.architectures or ())
        auto_class = AutoModelForSequenceClassification if is_classifier else AutoModel
        return remove_pruned_heads(auto_class.from_pretrained(path, config=config, trust_remote_code=False))
    except RuntimeError:  # transformers' report of weights whose shapes differ from config.json
        raise UserError(f"cannot load the Hugging Face model in {path}: its weights do not have the shapes its "
                        "config.json gives; restore the config or save the model again") from None
    except (OSError, ValueError, safetensors.SafetensorError) as err:
        raise UserError(f"cannot load the Hugging Face model in {path}: {error_line(err)}") from None


def error_line(err: BaseException) -> str:
    """The first line of an exception's message, to fold a library error into one UserError line.

    Usage: ``raise UserError(f"cannot load X: {error_line(err)}")``
    """
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
