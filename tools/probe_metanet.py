"""Can meta-training concentrate a trained network's group norms, and does the network stay prunable?

A probe on one trained image model (no collection, no selection): a fresh metanetwork is trained on that
model alone, either on the regulariser R only (``--loss reg``: what the metanetwork can express) or on the
spec's meta-step, task loss + R (``--loss ce+reg``; ``--batch-stats`` normalises BatchNorm with batch
statistics in the task loss). Every ``--every`` steps the transformed network is judged: the group-norm
share of its top 40% channels, R against the start, dev accuracy with the running BatchNorm statistics it
carries and after recalibrating them on 1,024 training images, and dev accuracy after a group-L2 prune to
``--speedup`` (no finetuning, BatchNorm recalibrated). Prints one JSON line per row, a table at the end, and
writes the rows to ``--json`` (atomically).

Usage::

    python tools/probe_metanet.py runs/r20/model --dataset fashion-mnist --max-train-samples 10000 \\
        --loss reg --steps 200 --json runs/probe-reg.json
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from prune.metanet import MetaNetwork, apply_metanet
from prune.metatrain import (CALIBRATION_EXAMPLES, DataModel, group_norm_penalty, meta_step, norm_concentration,
                             recalibrate_batchnorm, reference_ce_scale)
from prune.pruner import prune_model
from shrink.data import load_task_data
from shrink.data.collate import collate_images
from shrink.errors import cli_entry
from shrink.models import load_model
from shrink.report import print_table
from shrink.runs import atomic_write_json
from shrink.train import Batch, evaluate_model


def judge(model: nn.Module, item: DataModel, dev: DataLoader, calibration: DataLoader, speedup: float,
          reg: float, max_layer_ratio: float | None = None) -> dict[str, float]:
    """Share, R, and the three dev accuracies of ``model`` (a transformed copy; it is pruned here, no layer losing
    more than ``max_layer_ratio`` of its channels when given)."""
    params = {name: value.detach() for name, value in model.named_parameters()}
    figures = {"top40 share": norm_concentration(item.groups, params),
               "R": float(group_norm_penalty(item.groups, params, reg)),
               "acc stale BN": evaluate_model(model.eval(), dev, ("accuracy",))["accuracy"]}
    figures["acc recal BN"] = evaluate_model(recalibrate_batchnorm(model, calibration).eval(), dev,
                                             ("accuracy",))["accuracy"]
    # the model has its original widths (a metanetwork changes weights, not widths), so the cap needs no base widths
    prune_model(model, item.example_input, speedup=speedup, max_layer_ratio=max_layer_ratio)
    figures[f"acc pruned {speedup}x"] = evaluate_model(recalibrate_batchnorm(model, calibration).eval(), dev,
                                                       ("accuracy",))["accuracy"]
    return figures


def endless(loader: DataLoader) -> Iterator[Batch]:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a trained image model folder (shrink train / prune output)")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--max-train-samples", type=int, default=10000)
    parser.add_argument("--dev-samples", type=int, default=2000)
    parser.add_argument("--loss", choices=("reg", "ce+reg"), default="ce+reg")
    parser.add_argument("--batch-stats", action="store_true", help="BatchNorm on batch statistics in the task loss")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--batches", type=int, default=5, help="training batches of 128 per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--reg", type=float, default=10.0)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--speedup", type=float, default=2.5)
    parser.add_argument("--max-layer-ratio", type=float, default=None,
                        help="cap each layer's pruned fraction in the pruned-accuracy judge (as prune's flag)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    task = load_task_data(args.dataset, args.data_dir, max_train_samples=args.max_train_samples,
                          max_eval_samples=args.dev_samples)
    train = DataLoader(task.train, batch_size=128, shuffle=True, collate_fn=collate_images,
                       generator=torch.Generator().manual_seed(args.seed))
    calibration = DataLoader(Subset(task.train, range(min(CALIBRATION_EXAMPLES, len(task.train)))), batch_size=128,
                             collate_fn=collate_images)
    dev = DataLoader(task.dev, batch_size=256, collate_fn=collate_images)
    model = load_model(args.model).eval()
    item = DataModel.from_model(model, torch.zeros(1, *task.image_shape))
    metanet = MetaNetwork(item.graph.layout.node_dim, item.graph.layout.edge_dim)
    optimizer = torch.optim.AdamW(metanet.parameters(), lr=args.lr, weight_decay=5e-4)
    ce_scale = reference_ce_scale(len(task.train), args.batches)
    batches = endless(train)
    rows: list[dict[str, Any]] = [{"step": 0, **judge(copy.deepcopy(model), item, dev, calibration, args.speedup,
                                                      args.reg, args.max_layer_ratio)}]
    start_r, started = rows[0]["R"], time.perf_counter()
    print(json.dumps(rows[0]), flush=True)
    for step in range(1, args.steps + 1):
        metanet.train()
        optimizer.zero_grad(set_to_none=True)
        # No batches: the meta-step's gradient is R's alone (what the metanetwork learns without the task pulling back).
        step_batches = [next(batches) for _ in range(args.batches)] if args.loss == "ce+reg" else []
        if meta_step(metanet, item, step_batches, args.reg, args.alpha, ce_scale, args.batch_stats)["skipped"]:
            continue
        optimizer.step()
        if step % args.every == 0:
            metanet.eval()
            row = {"step": step, **judge(apply_metanet(metanet, model, item.example_input), item, dev, calibration,
                                         args.speedup, args.reg, args.max_layer_ratio)}
            row["R / start"], row["wall s"] = row["R"] / start_r, time.perf_counter() - started
            rows.append(row)
            print(json.dumps(row), flush=True)
    stats = ", batch stats" if args.batch_stats else ""
    title = f"metanetwork probe ({args.loss}{stats}, reg {args.reg}, lr {args.lr})"
    print_table(title, [{key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()}
                        for row in rows])
    if args.json:
        atomic_write_json(args.json, {"settings": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
