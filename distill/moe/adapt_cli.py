"""``distill adapt RUN_DIR --data NEW_DOMAIN [--out DIR]``: adapt a Meta-DMoE student to one new domain and
predict it.

``NEW_DOMAIN`` is one domain's examples: for an image student a folder of images (read in name order) or a
CSV/TSV/JSONL file with a ``path`` column (relative to the file); for a text student a CSV/TSV/JSONL file
with a text column. The first ``--support`` examples (default: the run's S) are the unlabeled support
set; one label-free step (the run's alpha) adapts the student; every example is then predicted. A label
column, when present, is read only after prediction, to report accuracy. ``DIR`` (default
``RUN_DIR/adapted/<name>``) receives ``predictions.csv``, ``adapt.json`` and the adapted model in ``model/``
(loadable like any shrink model, or exportable with ``shrink export``).

Usage::

    distill adapt runs/moe --data hospital-5/metadata.csv --out runs/moe-hospital-5
"""
from __future__ import annotations

import argparse
import copy
import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

import safetensors.torch
import torch

from distill.moe.adapt import MetaStudent, predict_domain
from distill.moe.aggregator import Aggregator
from distill.moe.run import (AGGREGATOR_CONFIG, AGGREGATOR_WEIGHTS, EXPERTS_DIR, META_FILE, MOE_DIR,
                             PROJECTOR_WEIGHTS)
from distill.teachers import MetaDMoETeacher
from shrink.cliargs import help_style
from shrink.data.image_folder import IMAGE_SUFFIXES, open_image
from shrink.data.images import stack_pil
from shrink.data.tables import read_table
from shrink.data.transforms import Normalize
from shrink.errors import UserError
from shrink.models import load_model, load_tokenizer, save_model
from shrink.runs import atomic_write_json, atomic_write_text, check_output_path


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``distill adapt``. Usage: ``build_parser().parse_args(["runs/moe", "--data", "d.csv"])``."""
    parser = argparse.ArgumentParser(prog="distill adapt", description="Adapt a Meta-DMoE student (a `distill "
                                     "--moe` run) to a new domain from unlabeled examples, predict it, save it",
                                     **help_style(__doc__, positionals="RUN_DIR "))
    parser.add_argument("run_dir", help="a finished `distill --moe` run directory")
    parser.add_argument("--data", required=True, help="the new domain: an image folder, or a CSV/TSV/JSONL file "
                        "(a path column for images, a text column for text)")
    parser.add_argument("--out", help="output folder (default RUN_DIR/adapted/<data name>)")
    parser.add_argument("--support", type=int, help="unlabeled examples adapted on (default: the run's support size)")
    parser.add_argument("--text-column", default="text", help="text column of a text file (default text)")
    parser.add_argument("--label-column", default="label", help="label column, read only to score (default label)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder's files")
    return parser


def load_meta_student(run_dir: Path) -> tuple[MetaStudent, dict[str, Any], Any]:
    """The run's meta-trained student wired to its teacher, the run's ``meta.json`` and the tokenizer (text).

    Usage: ``student, meta, tokenizer = load_meta_student(Path("runs/moe"))``
    """
    moe = run_dir / MOE_DIR
    if not (moe / META_FILE).is_file() or not (run_dir / "metrics.json").is_file():
        raise UserError(f"{run_dir} is not a finished `distill --moe` run (no {MOE_DIR}/{META_FILE} or metrics.json); "
                        "pass the run directory of a completed Meta-DMoE run")
    meta = json.loads((moe / META_FILE).read_text(encoding="utf-8"))
    config = json.loads((moe / AGGREGATOR_CONFIG).read_text(encoding="utf-8"))
    aggregator = Aggregator(**config)
    aggregator.load_state_dict(safetensors.torch.load_file(str(moe / AGGREGATOR_WEIGHTS)))
    experts = [load_model(moe / EXPERTS_DIR / f"expert-{k + 1}") for k in range(meta["experts"])]
    teacher = MetaDMoETeacher(experts, aggregator=aggregator, domain_to_expert=meta["domain_to_expert"],
                              mask=meta["mask"])
    student = MetaStudent(load_model(run_dir / "model"), teacher, meta["alpha"], meta["support"])
    projections = safetensors.torch.load_file(str(moe / PROJECTOR_WEIGHTS))
    teacher.pool.projections.load_state_dict({k: v for k, v in projections.items() if not k.startswith("student.")})
    if student.projector is not None:
        student.projector.load_state_dict({k[8:]: v for k, v in projections.items() if k.startswith("student.")})
    student.meta_trained = True
    tokenizer = load_tokenizer(str(run_dir / "model")) if meta["modality"] == "text" else None
    return student, meta, tokenizer


def read_domain(path: Path, meta: dict[str, Any], text_column: str, label_column: str) -> tuple[list[dict], list[Any]]:
    """The new domain's examples (model inputs only) and its raw labels (None where absent), in file order."""
    if meta["modality"] == "image":
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            rows: list[dict] = [{"path": str(p.relative_to(path))} for p in files]
            base = path
        else:
            rows, base = _rows(path, "path"), path.parent
            files = [base / row["path"] for row in rows]
        if not files:
            raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
        channels, height, width = meta["image_shape"]
        images = stack_pil((open_image(p) for p in files), (height, width), channels)
        normalize = Normalize(*meta["normalize"])
        examples = [{"pixel_values": normalize(image.float() / 255), "name": row["path"]}
                    for image, row in zip(images, rows)]
    else:
        rows = _rows(path, text_column)
        examples = [{"text": str(row[text_column]), "name": str(row[text_column])} for row in rows]
    return examples, [row.get(label_column) for row in rows]


def _rows(path: Path, column: str) -> list[dict]:
    if not path.is_file():
        raise UserError(f"--data {path} does not exist; pass an image folder or a CSV/TSV/JSONL file")
    table = read_table(path)
    if column not in table.columns:
        raise UserError(f"{path} has no column '{column}'; its columns are: {', '.join(table.columns)}")
    if not table.rows:
        raise UserError(f"{path} has no rows")
    return table.rows


class InputCollate:
    """Model inputs of examples, without labels: stacked images or tokenised text."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if self.tokenizer is None:
            return {"pixel_values": torch.stack([example["pixel_values"] for example in examples])}
        return dict(self.tokenizer([example["text"] for example in examples], padding="longest", truncation=True,
                                   max_length=self.max_length, return_tensors="pt"))


def score(predictions: list[int], labels: list[Any], names: list[str] | None) -> float | None:
    """Accuracy against the raw labels (names or class indices); None when the file has none."""
    if any(label in (None, "") for label in labels):
        return None
    names = [str(name) for name in names or []]
    gold = [names.index(str(label).strip()) if str(label).strip() in names else int(label) for label in labels]
    return sum(p == g for p, g in zip(predictions, gold)) / len(gold)


def adapt_command(argv: Sequence[str]) -> int:
    """``distill adapt``'s body (called by ``distill``'s entry point). Usage: ``adapt_command([run, "--data", d])``."""
    args = build_parser().parse_args(argv)
    run_dir, data = Path(args.run_dir), Path(args.data)
    if args.support is not None and args.support < 1:
        raise UserError(f"--support must be a positive number of examples, got {args.support}")
    out = check_output_path(Path(args.out) if args.out else run_dir / "adapted" / data.stem, "--out")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"{out} already holds files; pass --overwrite to replace them or another --out")
    student, meta, tokenizer = load_meta_student(run_dir)
    examples, labels = read_domain(data, meta, args.text_column, args.label_column)
    support = min(args.support or student.support, len(examples))
    logits = predict_domain(student, examples, InputCollate(tokenizer, meta["max_length"]), support)
    adapted = student.adapt(InputCollate(tokenizer, meta["max_length"])(examples[:support]))
    probabilities = logits.softmax(-1)
    predictions = probabilities.argmax(-1).tolist()
    names = meta["label_names"] or [str(k) for k in range(logits.shape[-1])]
    accuracy = score(predictions, labels, meta["label_names"])
    model = copy.deepcopy(student.model)
    model.load_state_dict({**model.state_dict(), **{k[6:]: v for k, v in adapted.items() if k.startswith("model.")}})
    save_model(model, out / "model", tokenizer=tokenizer)
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["example", "prediction", "confidence"])
    for example, predicted, probs in zip(examples, predictions, probabilities):
        writer.writerow([example["name"], names[predicted], f"{float(probs[predicted]):.4f}"])
    atomic_write_text(out / "predictions.csv", table.getvalue())
    summary = {"run": str(run_dir), "data": str(data), "examples": len(examples), "support": support,
               "alpha": student.alpha, "accuracy": accuracy,
               "source_domains": sorted(meta["domain_to_expert"]), "labels_read_for_adaptation": False}
    atomic_write_json(out / "adapt.json", summary)
    shown = "" if accuracy is None else f"; accuracy {accuracy:.4f} (labels read after prediction)"
    print(f"adapted on {support} unlabeled examples of {data}; predicted {len(examples)}{shown}; wrote {out}")
    return 0


__all__ = ["adapt_command", "build_parser", "load_meta_student", "read_domain"]
