"""ONNX export with a parity check, laid out as Hugging Face optimum's exporter lays out a folder.

``export_onnx`` traces the model with the torch.export-based exporter (``dynamo=True``: it follows
Hugging Face attention masks correctly, where the TorchScript tracer bakes in shape-dependent branches),
with named inputs (``input_ids``, ``attention_mask``, ``token_type_ids`` / ``pixel_values``), one output
``logits`` and dynamic batch (and sequence) axes, at opset 17 unless asked (a widely deployed one; newer
runtimes read it too). Everything is built in a staging folder beside the target: the model, the Hugging
Face ``config.json`` (with ``id2label``) and tokenizer files, as optimum writes them, so its ``ORTModel``
classes, ``AutoConfig`` / ``AutoTokenizer`` and ``pipeline`` load the folder, and ``labels.json`` (label
names, task, what the inputs look like) for serving with onnxruntime alone. Transformer blocks (attention,
skip LayerNorm, bias + GELU) are then fused into ONNX Runtime's own kernels unless ``fuse=False``. The
result is checked against PyTorch on the sample batch and on one example (a second batch size) with ONNX
Runtime, and only then moved into place; a mismatch beyond ``atol`` is a UserError and leaves nothing behind.

Usage::

    report = export_onnx(model, "out/model.onnx", example_batch=batch, tokenizer=tokenizer)
    logits = OnnxModel("out/model.onnx")(**batch)
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import onnx
import onnxruntime as ort
import torch
from torch import nn
from transformers import PretrainedConfig

from shrink.bench import device_of
from shrink.errors import UserError
from shrink.models.io import error_line
from shrink.onnx_runtime import IMAGE_INPUT, LABELS_FILE, OUTPUT_NAME, TEXT_INPUTS, OnnxModel, model_inputs
from shrink.runs import atomic_write_json
from shrink.train import forward_logits

# Protobuf files cannot exceed 2 GiB: larger models keep their weights in a side file.
EXTERNAL_DATA_BYTES = 1_800_000_000
# Opset 17 (ONNX 1.12, 2022) runs on the runtimes most servers have; the newest would lock older ones out.
DEFAULT_OPSET = 17


def newest_opset() -> int:
    """The highest opset both the torch exporter and the installed ONNX Runtime (its CPU kernels) support.

    Usage: ``newest_opset()  # 23 with torch 2.13 and onnxruntime 1.32``
    """
    from torch.onnx import _constants  # the exporter's own bounds; no public accessor exists

    kernels = ort.capi.onnxruntime_pybind11_state.get_all_opkernel_def()
    runtime_max = max(kernel.version_range[0] for kernel in kernels if kernel.domain in ("", "ai.onnx"))
    return min(_constants.ONNX_MAX_OPSET, runtime_max)


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
    fused: dict[str, int] = field(default_factory=dict)

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
    fuse: bool = True,
) -> ExportReport:
    """Export ``model`` to ONNX at ``path`` with ``labels.json`` (and the tokenizer) beside it; check parity.

    ``example_batch`` is one collated batch (``labels`` ignored). ``deploy_info`` adds entries to
    labels.json (``task``, ``is_regression``, ``max_length``, image ``normalize`` constants). ``fuse``
    rewrites transformer blocks into ONNX Runtime's fused kernels (:func:`fuse_for_onnxruntime`) before the
    parity check; ``fuse=False`` keeps a graph of standard ONNX operators only, for other runtimes.
    Usage: ``export_onnx(model, "out/model.onnx", example_batch=batch, tokenizer=tok, label_names=["neg", "pos"])``
    """
    target = Path(path)
    if target.suffix != ".onnx":
        raise UserError(f"the ONNX path must end in .onnx, got {target}")
    device = device_of(model)
    inputs = {name: value.to(device) for name, value in model_inputs(example_batch).items()}
    asked, opset = opset, opset or DEFAULT_OPSET
    if opset > newest_opset():
        raise UserError(f"opset {opset} is newer than this torch exporter and onnxruntime support "
                        f"({newest_opset()}); pass --opset {newest_opset()} or lower")
    was_training = model.training
    model.eval()
    created = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.stem}.export-"))
    try:
        started = time.perf_counter()
        staged = staging / target.name
        axes = _write_onnx(model, staged, inputs, opset, dynamic)
        written = onnx.load(str(staged), load_external_data=False)
        # The exporter builds at its own lowest opset and converts down, keeping that one if conversion fails:
        # an opset the user asked for is kept or refused; the default is a preference, and the report says
        # which opset the file has.
        written_opset = _default_domain_opset(written)
        if asked is not None and written_opset != asked:
            raise UserError(f"torch.onnx could not convert the model down to opset {asked} (it stayed at "
                            f"{written_opset}); pass --opset {written_opset}, or leave --opset out")
        # It also drops inputs the model ignores (token_type_ids of some encoders): read what stayed.
        names = [item.name for item in written.graph.input]
        fused = fuse_for_onnxruntime(staged) if fuse and _has_fusable_ops(written) else {}
        report = ExportReport(
            path=str(target), opset=written_opset, input_names=names, output_names=[OUTPUT_NAME],
            dynamic_axes={name: axes[name] for name in names if name in axes}, size_bytes=staged.stat().st_size,
            seconds=time.perf_counter() - started, fused=fused,
        )
        info = _labels_info(model, {name: inputs[name] for name in names}, label_names, deploy_info)
        atomic_write_json(staging / LABELS_FILE, info)
        config = getattr(model, "config", None)
        if isinstance(config, PretrainedConfig):  # optimum's layout: config.json beside model.onnx
            config.save_pretrained(staging)
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
        for folder in created:  # innermost first; only the folders this call made, left empty by a failure
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
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
    # A failed conversion down to the asked opset is logged with a traceback; export_onnx reports it in one line.
    for name in ("torch.onnx._internal.exporter._compat", "onnxscript.version_converter"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
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


def fuse_for_onnxruntime(path: Path) -> dict[str, int]:
    """Rewrite the ONNX file at ``path`` with ONNX Runtime's fused kernels (multi-head attention, skip
    LayerNorm, bias + GELU); returns how many of each fused operator the graph now has ({}: nothing matched,
    and the file is left as it was).

    onnxscript's ORT fusions match the torch.export graphs written here; ``onnxruntime.transformers``'
    optimizer was written for TorchScript exports and finds no attention block in them. The fused operators
    are ONNX Runtime's own (domain ``com.microsoft``): other runtimes need ``fuse=False``.
    Usage: ``fuse_for_onnxruntime(Path("out/model.onnx"))  # {"Attention": 4, "SkipLayerNormalization": 8, ...}``
    """
    import onnx_ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    if (path.parent / f"{path.name}.data").exists():  # weights beyond protobuf's 2 GiB: left unfused
        return {}
    model, _ = optimize_for_ort(onnx_ir.load(path))
    fused = Counter(node.op_type for node in model.graph.all_nodes() if node.domain == "com.microsoft")
    if fused:
        onnx_ir.save(model, path)
    return dict(sorted(fused.items()))


# The operators ONNX Runtime's fusions start from (attention's Softmax, LayerNorm, GELU's Erf): a graph with none
# of them (a CNN) has nothing to fuse, and the rewriter's pass over it would cost seconds for nothing.
FUSABLE_OPS = {"Softmax", "LayerNormalization", "Erf", "Gelu"}


def _has_fusable_ops(model: onnx.ModelProto) -> bool:
    nodes = [*model.graph.node, *(node for function in model.functions for node in function.node)]
    return any(node.op_type in FUSABLE_OPS for node in nodes)


def _default_domain_opset(model: onnx.ModelProto) -> int:
    """The opset of the standard ONNX domain that a written model declares."""
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


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
