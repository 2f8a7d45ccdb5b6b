"""Training throughput of ``shrink.train.Trainer`` against a bare hand-written PyTorch loop.

Same model, data, batch size, optimizer (AdamW + linear warmup schedule) and gradient clipping; the two
are timed alternately in one process (``--rounds`` pairs) so that machine noise hits both alike, and the
ratio of medians is reported. Goal: ratio >= 0.95.

Usage::

    python tools/bench_engine.py --model resnet20 --steps 40 --batch-size 64 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import get_scheduler

from shrink.data import load_task_data, make_collate
from shrink.models import build_model
from shrink.recipe import TrainConfig
from shrink.report import print_table
from shrink.runs import atomic_write_json
from shrink.train import Trainer


def bare_loop(model: nn.Module, dataset, collate, batch_size: int, steps: int, lr: float) -> float:
    """A plain PyTorch loop doing the same work as the engine; returns samples per second."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate, drop_last=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=int(0.06 * steps), num_training_steps=steps)
    model.train()
    done, samples, start = 0, 0, time.perf_counter()
    while done < steps:
        for batch in loader:
            loss = nn.functional.cross_entropy(model(batch["pixel_values"]), batch["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()  # the engine logs the loss every step; read it here too
            done += 1
            samples += len(batch["labels"])
            if done == steps:
                break
    return samples / (time.perf_counter() - start)


def engine_loop(model: nn.Module, dataset, collate, batch_size: int, steps: int, lr: float) -> float:
    """The same training through ``shrink.train.Trainer``; returns samples per second."""
    config = TrainConfig(max_steps=steps, batch_size=batch_size, lr=lr, progress=False, max_grad_norm=1.0)
    trainer = Trainer(model, dataset, None, collate=collate, config=config)
    start = time.perf_counter()
    result = trainer.fit()
    return result.steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    """Run the side-by-side rounds and print JSON and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args()

    task = load_task_data("synthetic-image", max_train_samples=args.steps * args.batch_size, seed=0)
    collate = make_collate(task)
    channels, size = task.image_shape[0], task.image_shape[-1]
    rates: dict[str, list[float]] = {"bare": [], "engine": []}
    for _ in range(args.rounds):
        for name, loop in (("bare", bare_loop), ("engine", engine_loop)):
            torch.manual_seed(0)
            model = build_model(args.model, num_classes=task.num_labels, in_channels=channels, image_size=size)
            rates[name].append(loop(model, task.train, collate, args.batch_size, args.steps, 1e-3))
    bare, engine = statistics.median(rates["bare"]), statistics.median(rates["engine"])
    result = {
        "model": args.model, "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds,
        "threads": torch.get_num_threads(), "bare_samples_per_s": bare, "engine_samples_per_s": engine,
        "ratio": engine / bare, "goal": 0.95, "rates": rates,
    }
    print(json.dumps(result, indent=2))
    print_table("shrink.train vs a bare PyTorch loop (median samples/s)",
                [{"loop": "bare PyTorch", "samples/s": bare}, {"loop": "shrink.train", "samples/s": engine},
                 {"loop": "ratio engine/bare", "samples/s": engine / bare}])
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
