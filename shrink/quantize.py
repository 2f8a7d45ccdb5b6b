"""int8 quantization of exported ONNX models with ONNX Runtime, with the accuracy change measured.

Transformers (MatMul-heavy graphs: BERTs, ViTs) get **dynamic** quantization: int8 weights, activations
quantized on the fly, no data needed. Convolutional networks get **static** quantization in QDQ format,
calibrated on a few hundred training images after ONNX Runtime's pre-processing (shape inference and
graph optimisation). ``int8`` picks by the graph; ``int8-dynamic`` / ``int8-static`` force a method.

Usage::

    report = quantize_int8("out/model.onnx", calibration=train_batches, eval_loader=dev_loader,
                           metrics=("accuracy",))
    report.path  # out/model.int8.onnx
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch.utils.data import DataLoader

from shrink.errors import UserError
from shrink.onnx_runtime import OnnxModel, as_numpy
from shrink.registry import Registry

# --quantize name -> method ("auto" chooses from the graph).
QUANTIZATIONS: Registry[str] = Registry("quantization")
QUANTIZATIONS.add("int8", "auto")
QUANTIZATIONS.add("int8-dynamic", "dynamic")
QUANTIZATIONS.add("int8-static", "static")

# Dynamic quantization of MatMul/Gemm gives the speed-up; Gather shrinks the embedding tables. The ONNX
# opset-23 ``Attention`` op is left alone: the quantizer would map it to the contrib QAttention, which
# does not accept its attributes.
DYNAMIC_OPS = ("MatMul", "Gemm", "Gather")


@dataclass
class QuantizeReport:
    """What ``quantize_int8`` did: the file, the method, sizes and (given data) dev metrics before and after."""

    path: str
    method: str
    source_size_bytes: int
    size_bytes: int
    seconds: float
    metrics_fp32: dict[str, float] | None = None
    metrics_int8: dict[str, float] | None = None
    primary_delta: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data. Usage: ``report.to_dict()["primary_delta"]``."""
        return asdict(self)


def choose_method(onnx_path: str | os.PathLike) -> str:
    """``"static"`` for convolutional graphs (more Conv than MatMul/Gemm nodes), else ``"dynamic"``.

    Usage: ``choose_method("out/resnet.onnx") == "static"``
    """
    ops = Counter(node.op_type for node in onnx.load(str(onnx_path), load_external_data=False).graph.node)
    return "static" if ops["Conv"] > ops["MatMul"] + ops["Gemm"] else "dynamic"


def quantize_int8(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    *,
    method: str = "auto",
    calibration: Iterable[Mapping[str, torch.Tensor]] | None = None,
    eval_loader: DataLoader | None = None,
    metrics: Sequence[str] = ("accuracy",),
) -> QuantizeReport:
    """Quantize ``onnx_path`` to int8 (default ``<stem>.int8.onnx`` beside it), written atomically.

    ``calibration`` (batches of model inputs) is needed for the static method; ``eval_loader`` measures
    ``metrics`` of the fp32 and int8 models on the same data.
    Usage: ``quantize_int8("out/model.onnx", method="dynamic")``
    """
    source = Path(onnx_path)
    if not source.is_file():
        raise UserError(f"ONNX file {source} not found; export one with `shrink export`")
    target = Path(out_path) if out_path is not None else source.with_name(f"{source.stem}.int8.onnx")
    if method == "auto":
        method = choose_method(source)
    if method not in ("dynamic", "static"):
        raise UserError(f"unknown quantization method '{method}'; use auto, dynamic or static")
    if method == "static" and calibration is None:
        raise UserError("static int8 quantization needs calibration images: export from a run directory whose "
                        "recipe names the dataset, or use --quantize int8-dynamic")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.stem}.") as workdir, _quiet_quantizer():
        staged = Path(workdir) / target.name
        if method == "dynamic":
            _quantize_dynamic(source, staged)
        else:
            _quantize_static(source, staged, calibration, Path(workdir))  # type: ignore[arg-type]
        os.replace(staged, target)
    report = QuantizeReport(path=str(target), method=method, source_size_bytes=source.stat().st_size,
                            size_bytes=target.stat().st_size, seconds=time.perf_counter() - started)
    if eval_loader is not None:
        from shrink.train import evaluate_model

        report.metrics_fp32 = evaluate_model(OnnxModel(source), eval_loader, metrics)
        report.metrics_int8 = evaluate_model(OnnxModel(target), eval_loader, metrics)
        report.primary_delta = report.metrics_int8[metrics[0]] - report.metrics_fp32[metrics[0]]
    return report


def _quantize_dynamic(source: Path, target: Path) -> None:
    model = onnx.load(str(source))
    # The exporter records shapes of weights; the quantizer transposes Gemm weights and the stale shapes
    # then contradict ONNX shape inference. They are recomputed anyway.
    del model.graph.value_info[:]
    # Shape inference cannot type the outputs of ONNX Runtime's fused kernels (Attention, SkipLayerNorm):
    # their weights and activations are float32, as every graph shrink.export writes.
    quantize_dynamic(model, str(target), weight_type=QuantType.QInt8, op_types_to_quantize=list(DYNAMIC_OPS),
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def _quantize_static(source: Path, target: Path, calibration: Iterable[Mapping[str, torch.Tensor]],
                     workdir: Path) -> None:
    prepared = workdir / "preprocessed.onnx"
    # Symbolic shape inference is for transformer graphs; CNNs need only ONNX's own.
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    names = [item.name for item in onnx.load(str(prepared), load_external_data=False).graph.input]
    feeds = [{name: feed[name] for name in names} for feed in map(as_numpy, calibration)]
    if not feeds:
        raise UserError("static int8 quantization got no calibration batches; the training split is empty")
    reader = _CalibrationBatches(feeds)
    quantize_static(str(prepared), str(target), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


class _CalibrationBatches(CalibrationDataReader):
    """Feeds ONNX Runtime's calibrator one batch of numpy inputs at a time."""

    def __init__(self, batches: Iterable[dict[str, np.ndarray]]) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Hide the quantizer's root-logger advice to pre-process: the dynamic path strips shapes instead."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)
