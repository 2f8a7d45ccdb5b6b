"""ONNX Runtime models that behave like PyTorch modules, and the input names an exported graph takes.

Both the exporter (:mod:`shrink.export`, to check parity) and the measurements (:mod:`shrink.bench`) run
exported files through :class:`OnnxModel`; it lives here so neither of those modules imports the other.

Usage::

    logits = OnnxModel("out/model.onnx")(**batch)
    session = ort_session("out/model.onnx", threads=2)
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from shrink.errors import UserError
from shrink.models.io import error_line

LABELS_FILE = "labels.json"
OUTPUT_NAME = "logits"
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
IMAGE_INPUT = "pixel_values"


def ort_session(path: str | os.PathLike, threads: int | None = None) -> ort.InferenceSession:
    """A CPU ONNX Runtime session with every graph optimisation on and one intra-op thread per core.

    Usage: ``ort_session("out/model.onnx").run(["logits"], feeds)``
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT's exception types share no base class beyond Exception
        raise UserError(f"ONNX Runtime cannot load {path}: {error_line(err)}") from None


def read_deploy_info(onnx_path: str | os.PathLike) -> dict[str, Any]:
    """The ``labels.json`` written beside an exported model, or ``{}`` when there is none.

    Usage: ``read_deploy_info("out/model.onnx").get("label_names")``
    """
    path = Path(onnx_path).with_name(LABELS_FILE)
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}; export the model again") from None
    return info if isinstance(info, dict) else {}


class OnnxModel(nn.Module):
    """An ONNX Runtime session used like a PyTorch classifier: ``model(**batch)`` returns logits.

    It works wherever shrink takes a model for inference (``evaluate_model``, ``measure_model``).
    Usage: ``OnnxModel("out/model.onnx")(pixel_values=torch.randn(8, 3, 32, 32)).shape``
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"ONNX file {self.path} not found; export one with `shrink export`")
        self.threads = threads or os.cpu_count() or 1
        self.session = ort_session(self.path, self.threads)
        inputs = {item.name: item for item in self.session.get_inputs()}
        self.input_names = list(inputs)
        self.output_name = OUTPUT_NAME if OUTPUT_NAME in [o.name for o in self.session.get_outputs()] \
            else self.session.get_outputs()[0].name
        self.vocab_size = read_deploy_info(self.path).get("vocab_size")
        pixel_dims = inputs[IMAGE_INPUT].shape[1:] if IMAGE_INPUT in inputs else []
        self.image_shape = tuple(pixel_dims) if pixel_dims and all(isinstance(d, int) for d in pixel_dims) else None

    def forward(self, pixel_values: torch.Tensor | None = None, **inputs: torch.Tensor) -> torch.Tensor:
        if pixel_values is not None:
            inputs[IMAGE_INPUT] = pixel_values
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise UserError(f"{self.path} needs the inputs {missing}; the batch has {sorted(inputs)}")
        feeds = {name: inputs[name].detach().cpu().numpy() for name in self.input_names}
        return torch.from_numpy(self.session.run([self.output_name], feeds)[0])


def model_inputs(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model inputs of a batch (labels dropped), in the graph's input order; UserError for others.

    Usage: ``model_inputs(batch).keys()  # input_ids, attention_mask, token_type_ids``
    """
    inputs = {name: batch[name] for name in (*TEXT_INPUTS, IMAGE_INPUT) if name in batch}
    unknown = sorted(set(batch) - set(inputs) - {"labels"})
    if unknown or not inputs:
        raise UserError(f"cannot export a model fed {unknown or 'nothing'}; the ONNX export takes "
                        f"{', '.join((*TEXT_INPUTS, IMAGE_INPUT))}")
    return inputs


def as_numpy(batch: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A batch's model inputs as numpy arrays, the form ONNX Runtime takes. Usage: ``session.run(None, as_numpy(b))``."""
    return {name: value.detach().cpu().numpy() for name, value in model_inputs(batch).items()}
