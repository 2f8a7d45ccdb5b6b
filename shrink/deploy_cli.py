"""``shrink export`` and ``shrink bench``: from run directories to validated ONNX files and comparison tables.

A *source* is a run directory (``RUN/model`` + ``RUN/recipe.yaml``, maybe ``RUN/*.onnx``), a saved model
folder, or (for bench) an ONNX file. The recipe, when there is one, supplies the data: the sample batch
for validation, calibration images and dev accuracy; without it, dummy inputs are generated.

Usage::

    shrink export runs/r20 --onnx out/model.onnx --quantize int8
    shrink bench runs/r20 out/model.onnx out/model.int8.onnx --json bench.json --plot bench.png
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from shrink.cliargs import require_positive
from shrink.errors import UserError
from shrink.recipe import DataSection, Recipe, build_recipe, read_yaml
from shrink.runs import atomic_write_bytes, atomic_write_json, check_output_path, refuse_unfinished

RECIPE_FILE, MODEL_DIR, EXPORT_FILE = "recipe.yaml", "model", "export.json"
MODEL_MARKERS = ("architecture.json", "config.json")
WEIGHTS_PATTERN = "*.safetensors"
TOKENIZER_MARKER = "tokenizer_config.json"
EVAL_BATCH = 64
SPLITS = ("train", "dev", "test")


# ------------------------------------------------------------------------------------------ sources
@dataclass
class Source:
    """What a path on the command line holds: a PyTorch model folder, ONNX files, and the recipe of its run."""

    root: Path
    model_dir: Path | None = None
    onnx_files: list[Path] = field(default_factory=list)
    recipe: Recipe | None = None


def resolve_source(path: str | Path) -> Source:
    """Classify ``path`` as a run directory, a saved model folder, an export folder or an ONNX file; else UserError.

    Usage: ``resolve_source("runs/r20").model_dir  # runs/r20/model``
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a run directory, a saved model folder or an .onnx file")
    refuse_unfinished(path)
    if path.is_file():
        if path.suffix != ".onnx":
            raise UserError(f"{path} is not an .onnx file; pass a run directory, a saved model folder or an .onnx file")
        return Source(path, onnx_files=[path], recipe=_onnx_recipe(path))
    onnx_files = sorted(path.glob("*.onnx"))
    if (path / MODEL_DIR).is_dir():
        return Source(path, path / MODEL_DIR, onnx_files, _read_recipe(path / RECIPE_FILE))
    if onnx_files and not any(path.glob(WEIGHTS_PATTERN)):  # an export folder: its config.json has no weights
        return Source(path, onnx_files=onnx_files, recipe=_onnx_recipe(onnx_files[0]))
    if any((path / marker).is_file() for marker in MODEL_MARKERS):
        return Source(path, path, onnx_files, None)
    raise UserError(f"{path} is neither a run directory (no {MODEL_DIR}/ inside) nor a saved model folder "
                    f"({' or '.join(MODEL_MARKERS)}); pass the folder a shrink command wrote")


def _read_recipe(path: Path) -> Recipe | None:
    """The data part (and seed) of a run's resolved recipe. Methods add sections and keys of their own
    (``distill:``, student options); export and bench need none of them, so they are not validated here."""
    if not path.is_file():
        return None
    raw = read_yaml(path)
    data = {key: value for key, value in (raw.get("data") or {}).items() if key in DataSection.model_fields}
    seed = (raw.get("train") or {}).get("seed")
    return build_recipe({"data": data, **({"train": {"seed": seed}} if seed is not None else {})}, source=str(path))


def _onnx_recipe(onnx_path: Path) -> Recipe | None:
    """The recipe of the run an ONNX file sits in, or of the run its export.json names as the source."""
    folder = onnx_path.parent
    if (folder / RECIPE_FILE).is_file():
        return _read_recipe(folder / RECIPE_FILE)
    record = folder / EXPORT_FILE
    if record.is_file():
        try:
            source = json.loads(record.read_text(encoding="utf-8")).get("source")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            return None
        if source:
            return _read_recipe(Path(source) / RECIPE_FILE)
    return None


def load_model_and_tokenizer(model_dir: Path) -> tuple[nn.Module, Any]:
    """The saved model and, for text models, the tokenizer saved beside it (None when there is none)."""
    from shrink.models import load_model

    model = load_model(model_dir)
    return model, _tokenizer_in(model_dir)


def _tokenizer_in(folder: Path) -> Any:
    from shrink.models import load_tokenizer

    return load_tokenizer(str(folder)) if (folder / TOKENIZER_MARKER).is_file() else None


# --------------------------------------------------------------------------------------------- data
@dataclass
class TaskView:
    """A task's data without augmentation, read with one model's tokenizer. Usage: ``view.loader("dev")``."""

    task: Any
    max_length: int
    tokenizer: Any = None
    seed: int = 0

    @property
    def collate(self) -> Any:
        """The batch collator (images, or text with this view's tokenizer)."""
        from shrink.data import make_collate

        return make_collate(self.task, self.tokenizer, self.max_length)

    def split(self, name: str) -> Dataset:
        """The ``train``, ``dev`` or ``test`` split; UserError when the dataset has none."""
        split = getattr(self.task, name, None) if name in SPLITS else None
        if split is None:
            raise UserError(f"dataset {self.task.name} has no '{name}' split; use --split dev or --split train")
        return split

    def loader(self, name: str, limit: int | None = None, batch_size: int = EVAL_BATCH) -> DataLoader:
        """The split in order (its first ``limit`` examples of a seeded shuffle when given), collated."""
        from shrink.data.task import seeded_subset

        dataset = seeded_subset(self.split(name), limit, self.seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=self.collate)

    def sample_batch(self, size: int) -> dict[str, torch.Tensor]:
        """The first ``size`` dev examples as one batch."""
        dev = self.split("dev")
        return self.collate([dev[index] for index in range(min(size, len(dev)))])

    def for_model(self, tokenizer: Any) -> "TaskView":
        """This view read with a model's own tokenizer (the task's, when the model brought none)."""
        return dataclasses.replace(self, tokenizer=tokenizer or self.task.tokenizer)

    def export(self, model: nn.Module, path: str | Path, batch_size: int = 8, **options: Any) -> Any:
        """Export ``model`` to ONNX at ``path``, validated on dev examples, with this task's labels and inputs.

        Usage: ``view.export(model, run / "model.onnx").to_dict()`` (``options`` go to ``export_onnx``)
        """
        from shrink.export import export_onnx

        return export_onnx(model, path, example_batch=self.sample_batch(batch_size), tokenizer=self.tokenizer,
                           label_names=self.task.label_names, deploy_info=self.deploy_info(), **options)

    def deploy_info(self) -> dict[str, Any]:
        """What a server needs to know beside the model: the task, and how inputs are prepared."""
        info: dict[str, Any] = {"task": self.task.name, "is_regression": self.task.is_regression}
        if self.task.modality == "text":
            info["max_length"] = self.max_length
        else:
            info["normalize"] = image_normalization(self.split("dev"))
        return info


def load_view(recipe: Recipe, max_eval_samples: int | None = None) -> TaskView:
    """The recipe's dataset with augmentation off (and, if given, a smaller dev/test subset).

    Usage: ``load_view(recipe).for_model(tokenizer).loader("dev")``
    """
    from shrink.experiment import load_task

    plain = recipe.model_copy(deep=True)
    plain.data.augment = False
    plain.data.max_eval_samples = max_eval_samples or plain.data.max_eval_samples
    return TaskView(load_task(plain), recipe.data.max_length, seed=recipe.train.seed)


def image_normalization(dataset: Dataset) -> dict[str, Any] | None:
    """How raw 0..255 pixels become model inputs (scale, mean, std), when the dataset normalises plainly."""
    from shrink.data import Normalize

    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    transform = getattr(dataset, "transform", None)
    if not isinstance(transform, Normalize):
        return None
    return {"scale": 1 / 255, "mean": transform.mean.flatten().tolist(), "std": transform.std.flatten().tolist()}


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"3x32x32"`` -> ``(3, 32, 32)``; UserError for anything else. Usage: ``parse_shape("1x28x28")``."""
    if text is None:
        return None
    try:
        dims = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise UserError(f"--example-shape must be CxHxW such as 3x32x32, got '{text}'")
    return dims


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,32"`` -> ``(1, 32)``; UserError for anything else. Usage: ``parse_batch_sizes("1,8,32")``."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise UserError(f"--batch-sizes must be positive integers separated by commas, such as 1,32; got '{text}'")
    return sizes


# ------------------------------------------------------------------------------------------- export
def export_source(path: str | Path, onnx_path: str | Path | None = None, *, opset: int | None = None,
                  quantize: str | None = None, atol: float = 1e-4, example_shape: str | None = None,
                  seq_len: int | None = None, batch_size: int = 8, calibration_samples: int = 128,
                  fuse: bool = True) -> dict[str, Any]:
    """Export a run's (or a model folder's) model to ONNX, validate it, optionally quantize; write export.json.

    ``fuse=False`` keeps standard ONNX operators (no ONNX Runtime fused kernels), for other runtimes.
    Returns what export.json holds. Usage: ``export_source("runs/r20", "out/model.onnx", quantize="int8")``
    """
    from shrink.bench import example_inputs
    from shrink.export import export_onnx
    from shrink.quantize import QUANTIZATIONS, quantize_int8

    method = QUANTIZATIONS.get(quantize) if quantize else None  # refuse a bad name before any work
    source = resolve_source(path)
    if source.model_dir is None:
        raise UserError(f"{path} holds ONNX models only; `shrink export` takes a run directory or a saved model folder")
    target = check_output_path(onnx_path or source.root / "model.onnx", "--onnx")
    model, tokenizer = load_model_and_tokenizer(source.model_dir)
    view = None
    if source.recipe is not None:
        try:
            view = load_view(source.recipe).for_model(tokenizer)
        except UserError as err:
            raise UserError(f"{err} (the data of {source.root / RECIPE_FILE}); or export the model folder "
                            f"{source.model_dir} alone, with generated sample inputs") from None
    if view is None:
        sample = example_inputs(model, batch_size, image_shape=parse_shape(example_shape), seq_len=seq_len or 128)
        report = export_onnx(model, target, example_batch=sample, opset=opset, tokenizer=tokenizer, atol=atol,
                             fuse=fuse)
    else:
        report = view.export(model, target, batch_size, opset=opset, atol=atol, fuse=fuse)
    record: dict[str, Any] = {"source": str(source.root.resolve()), "export": report.to_dict()}
    if method is not None:
        data = {} if view is None else {"calibration": view.loader("train", calibration_samples, batch_size=32),
                                        "eval_loader": view.loader("dev"), "metrics": view.task.metrics}
        record["quantization"] = quantize_int8(target, method=method, **data).to_dict()
    atomic_write_json(target.parent / EXPORT_FILE, record)
    return record


def export_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The table ``shrink export`` prints: one row per written model."""
    export = record["export"]
    fused = ", ".join(f"{count} {name}" for name, count in export["fused"].items()) or "nothing"
    rows = [{"model": export["path"], "opset": export["opset"], "fused for ONNX Runtime": fused,
             "MB": export["size_bytes"] / 1e6, "max abs diff": export["max_abs_diff"],
             "argmax agreement": export["argmax_agreement"]}]
    quantized = record.get("quantization")
    if quantized:
        rows.append({"model": quantized["path"], "opset": export["opset"], "MB": quantized["size_bytes"] / 1e6,
                     "int8 method": quantized["method"]})
        for row, metrics in zip(rows, (quantized["metrics_fp32"], quantized["metrics_int8"])):
            row.update({f"dev {name}": value for name, value in (metrics or {}).items()})
    return rows


def configure_export_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of ``shrink export``. Usage: ``configure_export_parser(sub.add_parser("export"))``."""
    from shrink.quantize import QUANTIZATIONS

    parser.add_argument("source", help="run directory (RUN/model + RUN/recipe.yaml) or a saved model folder")
    parser.add_argument("--onnx", help="output .onnx path (default: SOURCE/model.onnx)")
    parser.add_argument("--no-fuse", action="store_true",
                        help="keep standard ONNX operators only (default: attention, LayerNorm and GELU blocks are "
                             "fused into ONNX Runtime's own kernels, which other runtimes lack)")
    parser.add_argument("--opset", type=int,
                        help="ONNX opset, refused when the model cannot be converted to it (default: 17 where the "
                             "model converts, else the exporter's own; the table shows which)")
    parser.add_argument("--quantize", metavar="MODE",
                        help=f"also write MODEL.int8.onnx: {', '.join(QUANTIZATIONS.names())} "
                             "(int8: dynamic for transformers, static with calibration for CNNs)")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest allowed |onnx - pytorch| logit difference")
    parser.add_argument("--example-shape", help="CxHxW of the sample images when SOURCE has no recipe (default: the model's)")
    parser.add_argument("--seq-len", type=int, help="tokens per sample text when SOURCE has no recipe (default 128)")
    parser.add_argument("--batch-size", type=int, default=8, help="examples in the validation batch")
    parser.add_argument("--calibration-samples", type=int, default=128,
                        help="training examples that calibrate static int8 quantization")


def run_export(args: argparse.Namespace) -> int:
    """``shrink export``: export, validate, optionally quantize, print a table. Usage: ``run_export(args)``."""
    from shrink.report import print_table

    require_positive(args, "batch_size", "calibration_samples", "seq_len", "opset")
    record = export_source(args.source, args.onnx, opset=args.opset, quantize=args.quantize, atol=args.atol,
                           example_shape=args.example_shape, seq_len=args.seq_len, batch_size=args.batch_size,
                           calibration_samples=args.calibration_samples, fuse=not args.no_fuse)
    print_table(f"shrink export: {args.source}", export_rows(record))
    return 0


# -------------------------------------------------------------------------------------------- bench
@dataclass
class Subject:
    """One model to bench: what the record says about it, and how to run it on dummy batches."""

    record: dict[str, Any]
    model: nn.Module
    options: dict[str, Any]

    def batch(self, size: int) -> dict[str, torch.Tensor]:
        """A dummy batch of ``size`` inputs shaped as this model's data."""
        from shrink.bench import example_inputs

        return example_inputs(self.model, size, image_shape=self.options["image_shape"], seq_len=self.options["seq_len"])


def load_subjects(path: str | Path, *, split: str = "dev", data: Recipe | None = None,
                  max_eval_samples: int | None = None, seq_len: int | None = None, example_shape: str | None = None,
                  threads: int | None = None) -> list[Subject]:
    """Every model a source holds (PyTorch model, ONNX files), with its size, MACs and accuracy; no latency yet.

    ``data`` (a recipe naming a dataset) overrides the source's own recipe for accuracy; ``threads`` are
    ONNX Runtime's intra-op threads.
    Usage: ``[subject.record["runtime"] for subject in load_subjects("runs/r20")]  # ['pytorch', 'onnxruntime']``
    """
    from shrink.bench import measure_model, onnx_weights, size_on_disk
    from shrink.onnx_runtime import OnnxModel

    source = resolve_source(path)
    recipe = data or source.recipe
    view = load_view(recipe, max_eval_samples=max_eval_samples) if recipe is not None else None
    shape = parse_shape(example_shape)
    models: list[tuple[dict[str, Any], nn.Module, Any]] = []
    if source.model_dir is not None:
        model, tokenizer = load_model_and_tokenizer(source.model_dir)
        models.append(({"target": str(source.model_dir), "runtime": "pytorch",
                        "size_bytes": size_on_disk(source.model_dir)}, model, tokenizer))
    for onnx_file in source.onnx_files:
        params, size = onnx_weights(onnx_file)
        models.append(({"target": str(onnx_file), "runtime": "onnxruntime", "params": params, "size_bytes": size},
                       OnnxModel(onnx_file, threads), _tokenizer_in(onnx_file.parent)))
    data_info = {"dataset": view.task.name, "split": split, "primary_metric": view.task.metrics[0]} if view else {}
    subjects = []
    for record, model, tokenizer in models:
        options = _inputs_and_data(view, tokenizer, split, shape, seq_len)
        figures = measure_model(model, batch_sizes=(), macs=record["runtime"] == "pytorch", **options)
        subjects.append(Subject({**figures, **record, **data_info}, model, options))
    return subjects


def bench_targets(targets: Sequence[str | Path], *, batch_sizes: Sequence[int] = (1, 32), threads: int | None = None,
                  min_time_s: float = 1.0, rounds: int = 3, **source_options: Any) -> list[dict[str, Any]]:
    """Measure every model the targets hold: one record per model, all latencies timed in alternating rounds.

    ``threads`` (default: torch's count) is pinned for both runtimes and recorded; ``source_options`` go to
    :func:`load_subjects`.
    Usage: ``bench_targets(["runs/r20"], batch_sizes=(1, 32))[0]["latency"]["1"]["median_ms"]``
    """
    from shrink.bench import compare_latency

    threads = threads or torch.get_num_threads()
    subjects = [subject for target in targets for subject in load_subjects(target, threads=threads, **source_options)]
    latency = compare_latency({str(index): (subject.model, subject.batch) for index, subject in enumerate(subjects)},
                              batch_sizes, threads=threads, min_time_s=min_time_s, rounds=rounds)
    return [{**subject.record, "threads": threads, "latency": latency[str(index)]}
            for index, subject in enumerate(subjects)]


def _inputs_and_data(view: TaskView | None, tokenizer: Any, split: str, shape: tuple[int, ...] | None,
                     seq_len: int | None) -> dict[str, Any]:
    """measure_model's input-shape and accuracy arguments for one model, from the data when known."""
    if view is None:
        return {"image_shape": shape, "seq_len": seq_len or 128}
    view = view.for_model(tokenizer)
    return {"image_shape": view.task.image_shape or shape, "seq_len": seq_len or view.max_length,
            "loader": view.loader(split), "metrics": view.task.metrics}


def bench_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table ``shrink bench`` prints: one row per model, median latency (or a noise flag) and p90 per batch
    size, the primary metric."""
    from shrink.timing import latency_columns

    rows = []
    for record in records:
        row = {"model": record["target"], "runtime": record["runtime"], "params": record["params"],
               "MACs": record["macs"], "MB on disk": record["size_bytes"] / 1e6, **latency_columns(record["latency"])}
        if record.get("metrics"):
            name = record["primary_metric"]
            row[f"{record['split']} {name}"] = record["metrics"][name]
        rows.append(row)
    return rows


def plot_bench(records: Sequence[dict[str, Any]], path: str | Path) -> None:
    """PNG: median latency per model (one labelled row each) and batch size (one bar each), log scale, with
    the 10th-90th percentile range as error bars; noisy figures are hatched and say so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from matplotlib.patches import Patch

    sizes = list(records[0]["latency"])
    height = 0.8 / len(sizes)
    figure, axes = plt.subplots(figsize=(9, 1.2 + 0.5 * len(records) * len(sizes)))
    rows = np.arange(len(records))
    legend = [Patch(facecolor="white", edgecolor="black", hatch="//", label="noisy (IQR too wide)")]
    for offset, size in enumerate(sizes):
        stats = [record["latency"][size] for record in records]
        median = np.array([item["median_ms"] for item in stats])
        spread = np.array([[m - item["p10_ms"] for m, item in zip(median, stats)],
                           [item["p90_ms"] - m for m, item in zip(median, stats)]])
        bars = axes.barh(rows + offset * height, median, height, xerr=spread, capsize=3)
        legend.insert(offset, Patch(facecolor=bars[0].get_facecolor(), label=f"batch {size}"))
        for bar, item in zip(bars, stats):
            bar.set_hatch("//" if item["noisy"] else None)
            axes.annotate(f"{item['median_ms']:.3g}", (item["p90_ms"], bar.get_y() + bar.get_height() / 2),
                          xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    axes.set_yticks(rows + height * (len(sizes) - 1) / 2, [_plot_label(record) for record in records], fontsize=8)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.set_xlabel("latency per batch (ms, median; bars: 10th-90th percentile)")
    axes.set_title(f"shrink bench ({records[0]['threads']} threads, models timed in alternating rounds)")
    axes.legend(handles=legend, fontsize=8, loc="lower right")
    axes.grid(axis="x", alpha=0.3, which="both")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def _plot_label(record: dict[str, Any]) -> str:
    """A model's row label: its file or folder, the runtime, and the primary metric when measured."""
    label = f"{Path(record['target']).parent.name}/{Path(record['target']).name}\n{record['runtime']}"
    if record.get("metrics"):
        name = record["primary_metric"]
        label += f", {record['split']} {name} {record['metrics'][name]:.3f}"
    return label


def configure_bench_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of ``shrink bench``. Usage: ``configure_bench_parser(sub.add_parser("bench"))``."""
    parser.add_argument("targets", nargs="+", help="run directories, saved model folders or .onnx files")
    parser.add_argument("--json", help="write every figure to this JSON file")
    parser.add_argument("--plot", help="write an accuracy-vs-latency PNG here")
    parser.add_argument("--batch-sizes", default="1,32", help="batch sizes to time, comma-separated (default 1,32)")
    parser.add_argument("--split", default="dev", help="split for accuracy: dev, test or train (default dev)")
    parser.add_argument("--dataset", "--task", dest="dataset", help="dataset for accuracy (default: the run's recipe)")
    parser.add_argument("--data-dir", help="folder of --dataset's files")
    parser.add_argument("--max-eval-samples", type=int, help="measure accuracy on a seeded subset of this size")
    parser.add_argument("--seq-len", type=int, help="tokens per dummy text batch (default: the recipe's max_length or 128)")
    parser.add_argument("--example-shape", help="CxHxW of dummy images when the model does not say (default 3x32x32)")
    parser.add_argument("--threads", type=int,
                        help="threads for both runtimes, pinned while timing (default: torch's, "
                             f"{torch.get_num_threads()} here)")
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="seconds of timing per model and batch size, split over the rounds (default 1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds in which the models are timed in turn (default 3)")


def run_bench(args: argparse.Namespace) -> int:
    """``shrink bench``: measure every target, print a table, optionally write JSON and a plot."""
    from shrink.report import print_table

    batch_sizes = parse_batch_sizes(args.batch_sizes)
    require_positive(args, "rounds", "max_eval_samples", "seq_len", "threads")
    if args.min_time <= 0:
        raise UserError(f"--min-time must be a positive number of seconds, got {args.min_time}")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_output_path(path, flag)
    if args.split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}, got '{args.split}'")
    data = None
    if args.dataset:
        data = build_recipe({"data": {"dataset": args.dataset, "data_dir": args.data_dir}}, source="flags")
    if args.min_time <= 0 or args.rounds < 1:
        raise UserError(f"--min-time must be positive and --rounds at least 1, got {args.min_time} and {args.rounds}")
    records = bench_targets(args.targets, batch_sizes=batch_sizes, threads=args.threads, min_time_s=args.min_time,
                            rounds=args.rounds, split=args.split, data=data, max_eval_samples=args.max_eval_samples,
                            seq_len=args.seq_len, example_shape=args.example_shape)
    print_table(f"shrink bench ({records[0]['threads']} threads; a figure whose spread is too wide says noisy)",
                bench_rows(records))
    if args.json:
        atomic_write_json(args.json, {"threads": records[0]["threads"], "records": records})
    if args.plot:
        plot_bench(records, args.plot)
    return 0
