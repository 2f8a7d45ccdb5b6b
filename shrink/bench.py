"""Measurement shared by every command's metrics.json: parameters, MACs, size on disk, latency, accuracy.

Latency is wall-clock time of whole forward passes on dummy batches under ``torch.inference_mode``,
timed by :mod:`shrink.timing` (adaptive blocks, a spread check, the thread count pinned and recorded);
models compared with each other (``measure_models``, ``compare_latency``) are timed in alternating rounds.
ONNX files are measured through :class:`shrink.onnx_runtime.OnnxModel`, the same way as PyTorch modules.

Usage::

    figures = measure_model(model, image_shape=(3, 32, 32), batch_sizes=(1, 32))
    figures["params"], figures["macs"], figures["latency"]["1"]["median_ms"], figures["latency"]["1"]["noisy"]
    both = measure_models({"teacher": teacher, "student": student}, seq_len=64)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from shrink.errors import UserError
from shrink.timing import time_interleaved

DEFAULT_IMAGE_SHAPE = (3, 32, 32)
# Token ids for dummy text batches stay below this when the vocabulary size is unknown (any BERT has more).
FALLBACK_VOCAB = 100
Inputs = Mapping[str, torch.Tensor]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (shared tensors counted once). Usage: ``count_parameters(nn.Linear(10, 5)) == 55``."""
    return sum(param.numel() for param in model.parameters())


def count_macs(model: nn.Module, inputs: torch.Tensor | Inputs) -> int:
    """Multiply-accumulates of one forward pass, from PyTorch's FLOP counter (MACs = FLOPs / 2).

    ``inputs`` is a tensor (passed positionally) or a dict of keyword arguments / a batch.
    Usage: ``count_macs(nn.Linear(10, 5), torch.randn(1, 10)) == 50``
    """
    from shrink.train import forward_logits

    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    device = device_of(model)
    with counter, torch.inference_mode():
        if isinstance(inputs, torch.Tensor):
            model(inputs.to(device))
        else:
            forward_logits(model, {name: value.to(device) for name, value in inputs.items()})
    model.train(was_training)
    return counter.get_total_flops() // 2


def size_on_disk(path: str | os.PathLike) -> int:
    """Bytes of a file, or of every file under a folder. Usage: ``size_on_disk("runs/r20/model")``."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    raise UserError(f"{path} does not exist; pass a model file or folder")


def image_shape_of(model: nn.Module) -> tuple[int, ...] | None:
    """The (C, H, W) a model expects, when it says: an ONNX model's fixed input dims, or a zoo model's build spec.

    Usage: ``image_shape_of(build_model("resnet20", in_channels=1))  # (1, 32, 32)``
    """
    shape = getattr(model, "image_shape", None)
    if shape is not None:
        return tuple(shape)
    kwargs = getattr(model, "shrink_spec", {}).get("kwargs", {})
    if "in_channels" in kwargs and "image_size" in kwargs:
        return (kwargs["in_channels"], kwargs["image_size"], kwargs["image_size"])
    return None


def zero_image(model: nn.Module) -> torch.Tensor:
    """One all-zero image of the shape ``model`` expects (CIFAR's when it does not say), for tracing.

    Usage: ``zero_image(build_model("resnet20", in_channels=1)).shape == (1, 1, 32, 32)``
    """
    return torch.zeros(1, *(image_shape_of(model) or DEFAULT_IMAGE_SHAPE))


def is_text_model(model: nn.Module) -> bool:
    """True for models fed token ids (Hugging Face text models, text ONNX models). Usage: ``is_text_model(m)``."""
    names = getattr(model, "input_names", None)
    if names is not None:
        return "input_ids" in names
    return hasattr(model, "config") and hasattr(model.config, "vocab_size")


def example_inputs(model: nn.Module, batch_size: int, *, image_shape: Sequence[int] | None = None,
                   seq_len: int = 128, vocab_size: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """A seeded dummy batch for ``model``: token ids for text models, ``pixel_values`` for vision models.

    The image shape comes from ``image_shape``, else the model, else 3x32x32 (CIFAR).
    Usage: ``example_inputs(bert, 32, seq_len=128)["input_ids"].shape == (32, 128)``
    """
    generator = torch.Generator().manual_seed(seed)
    if is_text_model(model):
        config = getattr(model, "config", None)
        vocab = vocab_size or getattr(config, "vocab_size", None) or getattr(model, "vocab_size", None) or FALLBACK_VOCAB
        ids = torch.randint(0, vocab, (batch_size, seq_len), generator=generator)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if getattr(config, "type_vocab_size", 0) or "token_type_ids" in getattr(model, "input_names", ()):
            batch["token_type_ids"] = torch.zeros_like(ids)
        return batch
    shape = tuple(image_shape or image_shape_of(model) or DEFAULT_IMAGE_SHAPE)
    return {"pixel_values": torch.randn((batch_size, *shape), generator=generator)}


def compare_latency(models: Mapping[str, tuple[nn.Module, Callable[[int], Inputs]]], batch_sizes: Sequence[int],
                    **timing: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Latency of each ``(model, make_batch)`` per batch size, the models timed in alternating rounds.

    Results are keyed by name, then by the batch size as a string (JSON keys); ``timing`` goes to
    :func:`shrink.timing.time_interleaved` (threads, min_time_s, rounds).
    Usage: ``compare_latency({"a": (a, lambda b: example_inputs(a, b))}, (1, 32))["a"]["32"]["median_ms"]``
    """
    results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in models}
    for size in batch_sizes:
        calls = {name: _forward_call(model, make_batch(size)) for name, (model, make_batch) in models.items()}
        for name, stats in time_interleaved(calls, **timing).items():
            results[name][str(size)] = stats
    return results


def _forward_call(model: nn.Module, batch: Inputs) -> Callable[[], None]:
    """One forward pass of ``model`` on ``batch`` (moved to its device once), waiting for GPU kernels."""
    from shrink.train import forward_logits

    model.eval()
    device = device_of(model)
    batch = {name: value.to(device) for name, value in batch.items()}

    def call() -> None:
        forward_logits(model, batch)
        if device.type == "cuda":
            torch.cuda.synchronize()  # GPU kernels run asynchronously: wait, or only the launch is timed

    return call


def device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for parameter-free modules such as ONNX Runtime models).

    Usage: ``batch = {k: v.to(device_of(model)) for k, v in batch.items()}``
    """
    return next((param.device for param in model.parameters()), torch.device("cpu"))


def measure_model(model: nn.Module, *, image_shape: Sequence[int] | None = None, seq_len: int = 128,
                  batch_sizes: Sequence[int] = (1, 32), loader: DataLoader | None = None,
                  metrics: Sequence[str] | None = None, macs: bool = True, **timing: Any) -> dict[str, Any]:
    """Parameters, MACs (batch 1), latency per batch size and, given a loader, task metrics of ``model``.

    ``macs=False`` skips the FLOP count (ONNX Runtime models run outside PyTorch, so it cannot see them);
    ``timing`` goes to :func:`shrink.timing.time_interleaved` (threads, min_time_s, rounds).
    Usage: ``measure_model(model, image_shape=(3, 32, 32), loader=dev_loader, metrics=("accuracy",))``
    """
    return measure_models({"model": model}, image_shape=image_shape, seq_len=seq_len, batch_sizes=batch_sizes,
                          loader=loader, metrics=metrics, macs=macs, **timing)["model"]


def measure_models(models: Mapping[str, nn.Module], *, image_shape: Sequence[int] | None = None, seq_len: int = 128,
                   batch_sizes: Sequence[int] = (1, 32), loader: DataLoader | None = None,
                   metrics: Sequence[str] | None = None, macs: bool = True, **timing: Any) -> dict[str, dict[str, Any]]:
    """:func:`measure_model` for models fed the same inputs, their latencies timed in alternating rounds.

    Usage: ``measure_models({"teacher": t, "student": s}, seq_len=64)["student"]["latency"]["1"]["median_ms"]``
    """
    def batches(model: nn.Module) -> Callable[[int], Inputs]:
        return lambda size: example_inputs(model, size, image_shape=image_shape, seq_len=seq_len)

    latency = compare_latency({name: (model, batches(model)) for name, model in models.items()}, batch_sizes, **timing)
    figures = {}
    for name, model in models.items():
        figures[name] = {
            "params": count_parameters(model),
            "macs": count_macs(model, batches(model)(1)) if macs else None,
            "threads": timing.get("threads") or torch.get_num_threads(),
            "latency": latency[name],
        }
        if loader is not None:
            from shrink.train import evaluate_model

            figures[name]["metrics"] = evaluate_model(model, loader, metrics or ("accuracy",))
    return figures


def onnx_weights(path: str | os.PathLike) -> tuple[int, int]:
    """(weights stored in an ONNX graph, bytes on disk with any external-data files).

    Weights are the float and 8-bit initializers (integer index constants are not parameters).
    Usage: ``params, size = onnx_weights("out/model.onnx")``
    """
    import onnx

    path = Path(path)
    graph = onnx.load(str(path), load_external_data=False).graph
    weight_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                    onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    params = sum(int(np.prod(init.dims)) for init in graph.initializer if init.data_type in weight_types)
    side_files = {entry.value for init in graph.initializer for entry in init.external_data if entry.key == "location"}
    return params, path.stat().st_size + sum(size_on_disk(path.parent / name) for name in side_files)


def measure_onnx(path: str | os.PathLike, *, threads: int | None = None, **options: Any) -> dict[str, Any]:
    """:func:`measure_model` for an ONNX file run by ONNX Runtime (MACs are left out: PyTorch cannot count them).

    ``threads`` pins ONNX Runtime's intra-op threads (default: torch's count, so both runtimes get the same);
    ``options`` are measure_model's (image_shape, seq_len, batch_sizes, loader, metrics, timing).
    Usage: ``measure_onnx("out/model.onnx", batch_sizes=(1, 32))["latency"]["32"]["median_ms"]``
    """
    from shrink.onnx_runtime import OnnxModel

    model = OnnxModel(path, threads or torch.get_num_threads())
    figures = measure_model(model, macs=False, threads=model.threads, **options)
    figures["params"], figures["size_bytes"] = onnx_weights(path)
    return figures
