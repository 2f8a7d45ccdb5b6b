"""Deployment speed: PyTorch eager vs ONNX Runtime fp32 (standard operators, and with transformer blocks
fused into ONNX Runtime's kernels) vs ONNX Runtime int8 (dynamic, from the fused graph) for BERT shapes.

A TinyBERT-shaped classifier (4 layers, hidden 312, FFN 1200, 12 heads) and a BERT-base-shaped one, at
random init (weights do not change latency), are exported with ``shrink.export`` (parity-checked; once with
``fuse=False``, once fused) and quantized with ``shrink.quantize``; each runtime is timed at every batch
size at sequence length 128. The runtimes are timed in alternation for ``--rounds`` rounds so machine noise
hits all alike; the median over all timed blocks is reported, with the speed-up ratios. Goals: ORT fp32 >= 3x
eager at batch 1, int8 >= 1.5x ORT fp32. Each fp32 runtime's rate (GFLOP/s: 2 x MACs per example x batch /
latency) is set against this CPU's fp32 matrix-multiply rate, measured in the same process: the ceiling a
dense model's layers can reach here, so the table says whether a goal is left to a better runtime or beyond
what the CPU can do. ``--sst2 RUN`` also exports a trained SST-2 run and reports the dev accuracy of fp32 and
int8 ONNX models.

Usage::

    python tools/bench_export.py --models tinybert,bert-base --batch-sizes 1,32 --json out/bench_export.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import BertConfig, BertForSequenceClassification
from transformers.utils import logging as hf_logging

from shrink.bench import compare_latency, count_macs, count_parameters, example_inputs
from shrink.deploy_cli import export_source, parse_batch_sizes
from shrink.errors import cli_entry
from shrink.export import export_onnx
from shrink.models.hf import TINYBERT4_SHAPE
from shrink.onnx_runtime import OnnxModel
from shrink.quantize import quantize_int8
from shrink.report import print_table
from shrink.runs import atomic_write_json

SHAPES: dict[str, dict[str, int]] = {"tinybert": TINYBERT4_SHAPE, "bert-base": {}}  # {}: BertConfig's defaults
RUNTIMES = ("pytorch eager", "onnxruntime fp32 unfused", "onnxruntime fp32", "onnxruntime int8")


def random_bert(shape: dict[str, int], seed: int = 0) -> BertForSequenceClassification:
    """A binary BERT classifier of the given shape (uncased BERT vocabulary) at a seeded random init."""
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(num_labels=2, **shape)).eval()


def time_runtimes(models: dict[str, torch.nn.Module], batch_sizes: Sequence[int], seq_len: int, rounds: int,
                  min_time_s: float) -> dict[str, dict[str, float]]:
    """Median latency of each runtime per batch size, in ms; runtimes alternate (shrink.bench.compare_latency)."""
    reference = models[RUNTIMES[0]]
    latency = compare_latency({name: (model, lambda b: example_inputs(reference, b, seq_len=seq_len))
                               for name, model in models.items()}, batch_sizes, min_time_s=min_time_s, rounds=rounds)
    return {name: {size: stats["median_ms"] for size, stats in sizes.items()} for name, sizes in latency.items()}


def matmul_peak_gflops(size: int = 2048, seconds: float = 3.0) -> float:
    """This CPU's fp32 matrix-multiply rate at torch's thread count, GFLOP/s: the fastest of repeated
    ``size`` x ``size`` products over about ``seconds``. Usage: ``matmul_peak_gflops()  # e.g. 180.0``"""
    left, right = torch.randn(size, size), torch.randn(size, size)
    torch.mm(left, right)  # warm-up: thread pool and packing buffers
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(left, right)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def bench_shape(name: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Export, quantize and time one BERT shape; returns its latencies, ratios and file sizes."""
    model = random_bert(SHAPES[name])
    path, plain = workdir / name / "model.onnx", workdir / name / "plain" / "model.onnx"
    sample = example_inputs(model, 2, seq_len=16)
    exported = export_onnx(model, path, example_batch=sample, atol=args.atol)
    export_onnx(model, plain, example_batch=sample, atol=args.atol, fuse=False)
    quantized = quantize_int8(path, method="dynamic")
    models = dict(zip(RUNTIMES, (model, OnnxModel(plain), OnnxModel(path), OnnxModel(quantized.path))))
    latency = time_runtimes(models, args.batch_sizes, args.seq_len, args.rounds, args.min_time)
    eager, unfused, fp32, int8 = (latency[runtime] for runtime in RUNTIMES)
    macs = count_macs(model, example_inputs(model, 1, seq_len=args.seq_len))
    return {
        "model": name, "params": count_parameters(model), "macs_per_example": macs, "fused": exported.fused,
        "gflops": {runtime: {b: 2 * macs * int(b) / ms / 1e6 for b, ms in latency[runtime].items()}
                   for runtime in RUNTIMES},
        "fp32_mb": exported.size_bytes / 1e6, "int8_mb": quantized.size_bytes / 1e6,
        "max_abs_diff": exported.max_abs_diff, "latency_ms": latency,
        "ort_fp32_speedup_vs_eager": {b: eager[b] / fp32[b] for b in eager},
        "fused_speedup_vs_unfused": {b: unfused[b] / fp32[b] for b in fp32},
        "int8_speedup_vs_ort_fp32": {b: fp32[b] / int8[b] for b in fp32},
    }


def table_rows(results: Sequence[dict[str, Any]], peak_gflops: float) -> list[dict[str, Any]]:
    """One row per (model, batch size): the latencies, the ratios, and the fp32 rates against the matmul peak
    (``3x eager needs``: the share of the peak that ORT fp32 would have to run at for 3x over eager)."""
    rows = []
    for result in results:
        for size in result["ort_fp32_speedup_vs_eager"]:
            row = {"model": result["model"], "batch": int(size)}
            row.update({f"{runtime} ms": result["latency_ms"][runtime][size] for runtime in RUNTIMES})
            row["ORT/eager x"] = result["ort_fp32_speedup_vs_eager"][size]
            row["fused/unfused x"] = result["fused_speedup_vs_unfused"][size]
            row["int8/fp32 x"] = result["int8_speedup_vs_ort_fp32"][size]
            eager, fp32 = (result["gflops"][runtime][size] for runtime in ("pytorch eager", "onnxruntime fp32"))
            row["eager % of peak"], row["ORT fp32 % of peak"] = 100 * eager / peak_gflops, 100 * fp32 / peak_gflops
            row["3x eager needs % of peak"] = 300 * eager / peak_gflops
            rows.append(row)
    return rows


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; prints a table and the JSON (also written to ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tinybert,bert-base", help=f"comma-separated: {', '.join(SHAPES)}")
    parser.add_argument("--batch-sizes", default="1,32", type=parse_batch_sizes)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--min-time", type=float, default=6.0, help="seconds of timing per runtime and batch size")
    parser.add_argument("--atol", type=float, default=1e-4, help="export parity tolerance")
    parser.add_argument("--sst2", help="run directory of a trained SST-2 classifier: report fp32 vs int8 dev accuracy")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    hf_logging.disable_progress_bar()  # the table is the output
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in names if name not in SHAPES]
    if unknown:
        parser.error(f"unknown model shape(s) {unknown}; known: {', '.join(SHAPES)}")
    with tempfile.TemporaryDirectory(prefix="bench-export-") as work:
        # The accuracy check first: it is quick, and a bad run directory should not cost the timing runs.
        sst2 = export_source(args.sst2, Path(work) / "sst2" / "model.onnx", quantize="int8") if args.sst2 else None
        results = [bench_shape(name, Path(work), args) for name in names]
    peak = matmul_peak_gflops()
    report = {"torch_threads": torch.get_num_threads(), "seq_len": args.seq_len, "matmul_peak_gflops": peak,
              "results": results,
              "sst2": sst2["quantization"] if sst2 else "skipped (no --sst2 RUN given)"}
    print_table(f"eager vs ONNX Runtime (seq {args.seq_len}, {torch.get_num_threads()} threads; fp32 matmul peak "
                f"{peak:.0f} GFLOP/s)", table_rows(results, peak))
    if sst2:
        quantized = sst2["quantization"]
        print_table("SST-2 dev", [{"model": "onnxruntime fp32", **quantized["metrics_fp32"]},
                                  {"model": "onnxruntime int8", **quantized["metrics_int8"]}])
    print(json.dumps(report, indent=2))
    if args.json:
        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    main()
