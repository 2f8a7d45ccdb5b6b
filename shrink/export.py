"""ONNX export with a parity check, and ONNX Runtime models that behave like PyTorch modules.

``export_onnx`` traces the model with the torch.export-based exporter (``dynamo=True``: it follows
Hugging Face attention masks correctly, where the TorchScript tracer bakes in shape-dependent branches),
with named inputs (``input_ids``, ``attention_mask``, ``token_type_ids`` / ``pixel_values``), one output
``logits`` and dynamic batch (and sequence) axes. Everything is built in a staging folder beside the
target: the model, ``labels.json`` (label names, task, what the inputs look like) and the tokenizer, so a
deployed folder needs nothing from shrink. It is checked against PyTorch on the sample batch and on one
example (a second batch size) with ONNX Runtime, and only then moved into place; a mismatch beyond
``atol`` is a UserError and leaves nothing behind.

Usage::

    report = export_onnx(model, "out/model.onnx", example_batch=batch, tokenizer=tokenizer)
    logits = OnnxModel("out/model.onnx")(**batch)
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from shrink.bench import device_of
from shrink.errors import UserError
from shrink.models.io import error_line
from shrink.runs import atomic_write_json
from shrink.train import forward_logits

LABELS_FILE = "labels.json"
OUTPUT_NAME = "logits"
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
IMAGE_INPUT = "pixel_values"
# Protobuf files cannot exceed 2 GiB: larger models keep their weights in a side file.
EXTERNAL_DATA_BYTES = 1_800_000_000


def default_opset() -> int:
    """The highest opset both the torch exporter and the installed ONNX Runtime (its CPU kernels) support.

    Usage: ``default_opset()  # 23 with torch 2.13 and onnxruntime 1.31``
    """
    from torch.onnx import _constants  # the exporter's own bounds; no public accessor exists

    kernels = ort.capi.onnxruntime_pybind11_state.get_all_opkernel_def()
    runtime_max = max(kernel.version_range[0] for kernel in kernels if kernel.domain in ("", "ai.onnx"))
    return min(_constants.ONNX_MAX_OPSET, runtime_max)


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


@dataclass
class ExportReport:
    """What ``export_onnx`` did: the file, its opset and signature, and how closely it matches PyTorch."""

    path: str
    opset: int
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    size_bytes: int
    seconds: float
    max_abs_diff: float | None = None
    argmax_agreement: float | None = None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data. Usage: ``atomic_write_json("export.json", report.to_dict())``."""
        return asdict(self)


class _NamedInputs(nn.Module):
    """The ONNX graph's signature: keyword inputs with the standard names in, logits out.

    torch.export needs explicit parameters to name graph inputs and give each its dynamic axes.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                 IMAGE_INPUT: pixel_values}
        return forward_logits(self.model, {name: value for name, value in given.items() if value is not None})


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


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    example_batch: Mapping[str, torch.Tensor],
    opset: int | None = None,
    dynamic: bool = True,
    tokenizer: Any = None,
    label_names: Sequence[str] | None = None,
    deploy_info: Mapping[str, Any] | None = None,
    validate: bool = True,
    atol: float = 1e-4,
) -> ExportReport:
    """Export ``model`` to ONNX at ``path`` with ``labels.json`` (and the tokenizer) beside it; check parity.

    ``example_batch`` is one collated batch (``labels`` ignored). ``deploy_info`` adds entries to
    labels.json (``task``, ``is_regression``, ``max_length``, image ``normalize`` constants).
    Usage: ``export_onnx(model, "out/model.onnx", example_batch=batch, tokenizer=tok, label_names=["neg", "pos"])``
    """
    target = Path(path)
    if target.suffix != ".onnx":
        raise UserError(f"the ONNX path must end in .onnx, got {target}")
    device = device_of(model)
    inputs = {name: value.to(device) for name, value in model_inputs(example_batch).items()}
    opset = opset or default_opset()
    was_training = model.training
    model.eval()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.stem}.export-"))
    try:
        started = time.perf_counter()
        staged = staging / target.name
        axes = _write_onnx(model, staged, inputs, opset, dynamic)
        # The exporter drops inputs the model ignores (token_type_ids of some encoders): read what stayed. It
        # also keeps its own opset when converting down to the requested one fails: report the file's.
        written = onnx.load(str(staged), load_external_data=False)
        names = [item.name for item in written.graph.input]
        written_opset = next(entry.version for entry in written.opset_import if entry.domain in ("", "ai.onnx"))
        report = ExportReport(
            path=str(target), opset=written_opset, input_names=names, output_names=[OUTPUT_NAME],
            dynamic_axes={name: axes[name] for name in names if name in axes}, size_bytes=staged.stat().st_size,
            seconds=time.perf_counter() - started,
        )
        info = _labels_info(model, {name: inputs[name] for name in names}, label_names, deploy_info)
        atomic_write_json(staging / LABELS_FILE, info)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        if validate:
            try:
                report.max_abs_diff, report.argmax_agreement = validate_onnx(staged, model, inputs, atol, dynamic)
            except UserError as err:
                raise UserError(f"{err}; nothing was written to {target.parent}") from None
        report.files = sorted(item.name for item in staging.iterdir())
        for item in staging.iterdir():
            os.replace(item, target.parent / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        model.train(was_training)
    return report


def _write_onnx(model: nn.Module, path: Path, inputs: Mapping[str, torch.Tensor], opset: int,
                dynamic: bool) -> dict[str, dict[int, str]]:
    """Run torch.onnx.export; returns the dynamic axes given to each input."""
    if dynamic and next(iter(inputs.values())).shape[0] == 1:
        # torch.export treats a size-1 dimension as a constant, so trace with a batch of two.
        inputs = {name: torch.cat([value, value]) for name, value in inputs.items()}
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = {name: ({0: batch, 1: sequence} if name in TEXT_INPUTS else {0: batch}) for name in inputs}
    axes = {name: {axis: dim.__name__ for axis, dim in spec.items()} for name, spec in shapes.items()} if dynamic else {}
    large = sum(t.numel() * t.element_size() for t in model.state_dict().values()) > EXTERNAL_DATA_BYTES
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # torchvision notes
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*axis name")
            warnings.filterwarnings("ignore", category=FutureWarning)  # torch's internal deprecations
            torch.onnx.export(
                _NamedInputs(model).eval(), (), str(path), kwargs=dict(inputs), input_names=list(inputs),
                output_names=[OUTPUT_NAME], opset_version=opset, dynamo=True, dynamic_shapes=shapes if dynamic else None,
                external_data=large, verbose=False,
            )
    except torch.onnx.OnnxExporterError as err:
        raise UserError(f"torch.onnx cannot export {type(model).__name__} at opset {opset}: {error_line(err)}; "
                        "try another --opset") from None
    return axes


def validate_onnx(path: str | os.PathLike, model: nn.Module, inputs: Mapping[str, torch.Tensor],
                  atol: float = 1e-4, dynamic: bool = True) -> tuple[float, float | None]:
    """Compare ONNX Runtime with PyTorch on ``inputs`` and, for dynamic axes, on its first example alone.

    Returns (max abs diff, argmax agreement; None for one-output regressors). UserError beyond ``atol``.
    Usage: ``diff, agreement = validate_onnx("out/model.onnx", model, batch, atol=1e-4)``
    """
    onnx_model = OnnxModel(path)
    diffs, agreements = [], []
    feeds = [dict(inputs)] + ([{name: value[:1] for name, value in inputs.items()}] if dynamic else [])
    for feed in feeds:
        with torch.inference_mode():
            expected = forward_logits(model, feed).float().cpu()
        try:
            got = onnx_model(**feed).float()
        except Exception as err:  # a runtime failure here is a failed export, reported like a mismatch
            raise UserError(f"ONNX Runtime cannot run the exported {Path(path).name}: {error_line(err)}") from None
        if got.shape != expected.shape:
            raise UserError(f"the exported model gives logits of shape {tuple(got.shape)}, PyTorch "
                            f"{tuple(expected.shape)}; dynamic axes failed at batch size {len(expected)}")
        diffs.append(float((got - expected).abs().max()))
        if expected.shape[-1] > 1:
            agreements.append((got.argmax(-1) == expected.argmax(-1)).float())
    diff = max(diffs)
    agreement = float(torch.cat(agreements).mean()) if agreements else None
    if not math.isfinite(diff) or diff > atol:
        shown = "n/a" if agreement is None else f"{agreement:.1%}"
        raise UserError(f"the ONNX export does not match PyTorch: max abs diff {diff:.3g} > atol {atol:g} "
                        f"(argmax agreement {shown})")
    return diff, agreement


def _labels_info(model: nn.Module, inputs: Mapping[str, torch.Tensor], label_names: Sequence[str] | None,
                 extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """labels.json: label names and how to build inputs, for serving without shrink."""
    config = getattr(model, "config", None)
    if label_names is None and config is not None and getattr(config, "id2label", None):
        label_names = [config.id2label[index] for index in sorted(config.id2label)]
    info: dict[str, Any] = {
        "label_names": list(label_names) if label_names is not None else None,
        "is_regression": getattr(config, "problem_type", None) == "regression",
        "input_names": list(inputs),
    }
    if IMAGE_INPUT in inputs:
        info["image_shape"] = list(inputs[IMAGE_INPUT].shape[1:])
    if config is not None and getattr(config, "vocab_size", None):
        info["vocab_size"] = config.vocab_size
    info.update(extra or {})
    return info


def as_numpy(batch: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A batch's model inputs as numpy arrays, the form ONNX Runtime takes. Usage: ``session.run(None, as_numpy(b))``."""
    return {name: value.detach().cpu().numpy() for name, value in model_inputs(batch).items()}
