"""Stage weights on disk: one safetensors file of per-stage tensors plus the signature it was trained for.

Keys are ``<stage>.<tensor>`` (``0.blocks.0.attn.qkv.weight``), so a file holds a list of per-stage state
dicts indexed by module id, never by file order; the JSON metadata records the builder signature (model,
split, dataset) that every phase checks before it uses the tensors. Written through a temp file and a rename.

Usage::

    save_stages("RUN/meta/stages.safetensors", {0: model.stage_state(0), ...}, {"fingerprint": fp})
    states, info = load_stages("RUN/meta/stages.safetensors")
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import safetensors
import safetensors.torch
import torch

from shrink.errors import UserError
from shrink.runs import atomic_write_bytes

METADATA_KEY = "assemble"


def save_stages(path: str | Path, states: Mapping[int, Mapping[str, torch.Tensor]], info: dict[str, Any]) -> None:
    """Write the stages' tensors and ``info`` (JSON) atomically. Usage: ``save_stages(path, {2: state}, info)``."""
    tensors = {f"{index}.{key}": value.detach().cpu().contiguous().clone()
               for index, state in states.items() for key, value in state.items()}
    payload = safetensors.torch.save(tensors, metadata={METADATA_KEY: json.dumps(info, default=str)})
    atomic_write_bytes(path, payload)


def load_stages(path: str | Path) -> tuple[dict[int, dict[str, torch.Tensor]], dict[str, Any]]:
    """The per-stage state dicts (by stage index) and the info saved with them; UserError when unreadable."""
    path = Path(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            info = json.loads((handle.metadata() or {})[METADATA_KEY])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (OSError, KeyError, ValueError, safetensors.SafetensorError) as err:
        raise UserError(f"cannot read stage weights {path} ({type(err).__name__}); run that phase again") from None
    states: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, _, name = key.partition(".")
        states.setdefault(int(index), {})[name] = value
    return states, info


__all__ = ["load_stages", "save_stages"]
