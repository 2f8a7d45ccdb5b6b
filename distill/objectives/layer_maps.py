"""Which teacher layer teaches which student layer (spec §2.5), and the EMD transport plan.

Hidden-state index 0 is the embeddings and i is the output of layer i, so a model with N layers has
hidden indices 0..N; attention maps index layers 0..N-1. All strategies use integer floor arithmetic
(the reference's float ``int(i*N_T/N_S)`` can miss the last layer, §6.20). Pairs are (teacher, student).

Usage::

    resolve_layer_map("skip", n_teacher=12, n_student=4).pairs    # ((0,0),(3,1),(6,2),(9,3),(12,4))
    resolve_layer_map("0:0,6:2,12:4", 12, 4).pairs                 # explicit pairs
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from scipy.optimize import linprog

from shrink.errors import UserError
from shrink.registry import Registry

Pair = tuple[int, int]
FeatureKind = Literal["hidden", "attention"]


@dataclass(frozen=True)
class LayerMap:
    """Layer pairs (teacher, student). ``transported`` pairs (EMD) are weighted by an optimal-transport flow.

    ``features`` is the index space: "hidden" (0 = embeddings), "attention" (layers 0..N-1), or None for
    explicit pairs, which fit either. Usage: ``LayerMap(((0, 0), (12, 4)), features="hidden")``.
    """

    pairs: tuple[Pair, ...]
    transported: tuple[Pair, ...] = ()
    features: FeatureKind | None = None

    def all_pairs(self) -> tuple[Pair, ...]:
        """Fixed and transported pairs together. Usage: ``len(layer_map.all_pairs())``."""
        return self.pairs + self.transported


LAYER_MAPS: Registry[Callable[[int, int], LayerMap]] = Registry("layer map")
_EXPLICIT = re.compile(r"\d+:\d+(,\d+:\d+)*")


@LAYER_MAPS.register("skip")
def skip_map(n_teacher: int, n_student: int) -> LayerMap:
    """(⌊i·N_T/N_S⌋, i) for i = 0..N_S. Usage: ``skip_map(12, 4)``."""
    return LayerMap(tuple((i * n_teacher // n_student, i) for i in range(n_student + 1)), features="hidden")


@LAYER_MAPS.register("last")
def last_map(n_teacher: int, n_student: int) -> LayerMap:
    """(N_T - N_S + i, i) for i = 0..N_S. Usage: ``last_map(12, 4)``."""
    return LayerMap(tuple((n_teacher - n_student + i, i) for i in range(n_student + 1)), features="hidden")


@LAYER_MAPS.register("tinybert")
def tinybert_hidden_map(n_teacher: int, n_student: int) -> LayerMap:
    """TinyBERT hidden states: (i·k, i) with k = ⌊N_T/N_S⌋, i = 0..N_S. Usage: ``tinybert_hidden_map(12, 4)``."""
    k = n_teacher // n_student
    return LayerMap(tuple((i * k, i) for i in range(n_student + 1)), features="hidden")


@LAYER_MAPS.register("tinybert_attention")
def tinybert_attention_map(n_teacher: int, n_student: int) -> LayerMap:
    """TinyBERT attention: teacher layer (i+1)·k - 1 -> student layer i (0-based). Usage: ``tinybert_attention_map(12, 4)``."""
    k = n_teacher // n_student
    return LayerMap(tuple(((i + 1) * k - 1, i) for i in range(n_student)), features="attention")


@LAYER_MAPS.register("emd")
def emd_map(n_teacher: int, n_student: int) -> LayerMap:
    """Embeddings pair (0, 0) plus every transformer-layer pair, weighted by the EMD flow. Usage: ``emd_map(12, 4)``."""
    transported = tuple((t, s) for s in range(1, n_student + 1) for t in range(1, n_teacher + 1))
    return LayerMap(((0, 0),), transported, features="hidden")


def resolve_layer_map(spec: str, n_teacher: int, n_student: int, features: FeatureKind = "hidden") -> LayerMap:
    """A strategy name or explicit "teacher:student" pairs, checked against the models' layer counts.

    Usage: ``resolve_layer_map("last", n_teacher=12, n_student=4, features="hidden")``
    """
    if n_teacher < 1 or n_student < 1:
        raise UserError(f"layer maps need at least one layer per model, got teacher {n_teacher}, student {n_student}")
    compact = spec.replace(" ", "")
    if spec in LAYER_MAPS:
        layer_map = LAYER_MAPS.get(spec)(n_teacher, n_student)
    elif _EXPLICIT.fullmatch(compact):
        pairs = tuple(tuple(int(i) for i in pair.split(":")) for pair in compact.split(","))
        layer_map = LayerMap(pairs)  # type: ignore[arg-type]
    else:
        raise UserError(f"{LAYER_MAPS.unknown_message(spec)}; or pass teacher:student pairs like '0:0,6:2,12:4'")
    if layer_map.features not in (None, features):
        raise UserError(f"layer map '{spec}' pairs {layer_map.features} layers, but this loss needs {features} "
                        f"layers; use {'tinybert_attention' if features == 'attention' else 'skip'} or explicit pairs")
    for teacher, student in layer_map.all_pairs():
        _check_index(spec, "teacher", teacher, n_teacher, features)
        _check_index(spec, "student", student, n_student, features)
    return layer_map


def _check_index(spec: str, side: str, index: int, layers: int, features: FeatureKind) -> None:
    last = layers if features == "hidden" else layers - 1
    if not 0 <= index <= last:
        raise UserError(f"layer map '{spec}' asks for {side} {features} layer {index}, but the {side} has "
                        f"{layers} layers ({features} indices 0..{last})")


def transport_plan(cost: np.ndarray) -> np.ndarray:
    """The optimal-transport flow F [N_S, N_T] between uniform marginals 1/N_S and 1/N_T minimising ΣF⊙C.

    The costs are shifted to be non-negative first: MI costs are negative, and since every flow has total
    mass 1 a constant shift changes ΣF⊙C by the same amount for all flows, so the optimal flow is unchanged.
    Usage: ``flow = transport_plan(cost.detach().cpu().numpy())``
    """
    if not np.all(np.isfinite(cost)):
        raise UserError("the EMD layer cost matrix has non-finite values (training diverged?); lower the learning rate")
    n_student, n_teacher = cost.shape
    shifted = cost - cost.min()
    rows = np.kron(np.eye(n_student), np.ones(n_teacher))
    cols = np.kron(np.ones(n_student), np.eye(n_teacher))
    marginals = np.concatenate([np.full(n_student, 1.0 / n_student), np.full(n_teacher, 1.0 / n_teacher)])
    result = linprog(shifted.ravel(), A_eq=np.vstack([rows, cols]), b_eq=marginals, bounds=(0, None), method="highs")
    if not result.success:
        raise RuntimeError(f"the EMD transport problem failed: {result.message}")
    return result.x.reshape(n_student, n_teacher)


__all__ = ["LAYER_MAPS", "LayerMap", "resolve_layer_map", "transport_plan"]
