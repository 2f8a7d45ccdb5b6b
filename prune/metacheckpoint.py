"""Meta-training checkpoints, one per meta-epoch, in safetensors + JSON (nothing is unpickled).

A checkpoint holds what the next epoch depends on: the metanetwork, the AdamW state, the epochs done (the
step schedule follows from them), the history and best epoch so far with the best weights, and the RNG
states (torch's, which augmentation draws from, and the training loader's shuffling generator), so a
resumed meta-training reaches the same metanetwork as an uninterrupted one.

Usage::

    saved = load_meta_checkpoint(folder, metanet, optimizer, generator)   # None when there is none
    save_meta_checkpoint(folder, MetaState(metanet, optimizer, epoch, history, best_epoch, best_score, best), generator)
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from shrink.errors import UserError
from shrink.runs import atomic_dir, atomic_write_json

TENSORS_FILE, STATE_FILE = "state.safetensors", "state.json"


@dataclass
class MetaState:
    """Where meta-training stands after ``epoch`` epochs (0: only the untrained metanetwork was scored)."""

    metanet: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int
    history: list[dict[str, float]]
    best_epoch: int
    best_score: float
    best: dict[str, torch.Tensor]


def save_meta_checkpoint(folder: Path, state: MetaState, generator: torch.Generator | None = None) -> None:
    """Replace the checkpoint in ``folder`` by ``state`` (written whole, then renamed into place)."""
    tensors = {f"metanet.{k}": v.detach().contiguous() for k, v in state.metanet.state_dict().items()}
    tensors.update({f"best.{k}": v.detach().contiguous() for k, v in state.best.items()})
    optimizer = state.optimizer.state_dict()
    slots: dict[str, list[str]] = {}
    for index, entries in optimizer["state"].items():
        slots[str(index)] = sorted(entries)
        tensors.update({f"optimizer.{index}.{key}": torch.as_tensor(value).contiguous()
                        for key, value in entries.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    if generator is not None:
        tensors["rng.loader"] = generator.get_state()
    meta = {"epoch": state.epoch, "history": state.history, "best_epoch": state.best_epoch,
            "best_score": state.best_score, "param_groups": optimizer["param_groups"], "slots": slots}
    with atomic_dir(folder) as tmp:
        safetensors.torch.save_file(tensors, str(tmp / TENSORS_FILE))
        atomic_write_json(tmp / STATE_FILE, meta)


def load_meta_checkpoint(folder: Path, metanet: nn.Module, optimizer: torch.optim.Optimizer,
                         generator: torch.Generator | None = None) -> MetaState | None:
    """Restore ``metanet``, ``optimizer`` and the RNG states from ``folder``; None when it holds no checkpoint,
    UserError when it holds a damaged one."""
    if not (folder / STATE_FILE).is_file():
        return None
    try:
        meta = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        tensors = safetensors.torch.load_file(str(folder / TENSORS_FILE))
        metanet.load_state_dict(_prefixed(tensors, "metanet."))
        optimizer.load_state_dict({"param_groups": meta["param_groups"], "state": {
            int(index): {key: tensors[f"optimizer.{index}.{key}"] for key in keys}
            for index, keys in meta["slots"].items()}})
        torch.set_rng_state(tensors["rng.torch"])
        if generator is not None:
            generator.set_state(tensors["rng.loader"])
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise UserError(f"meta-training checkpoint {folder} is damaged ({type(err).__name__}); delete it to "
                        "meta-train from the start") from None
    return MetaState(metanet, optimizer, meta["epoch"], meta["history"], meta["best_epoch"], meta["best_score"],
                     _prefixed(tensors, "best."))


def remove_meta_checkpoint(folder: Path) -> None:
    """Delete the checkpoint once the chosen metanetwork is saved. Usage: ``remove_meta_checkpoint(folder)``."""
    shutil.rmtree(folder, ignore_errors=True)


def _prefixed(tensors: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
