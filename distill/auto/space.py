"""AutoDistiller's search space, enumerated from the registries (spec §4): never a hand-kept list of options.

Each :class:`Dimension` is one Optuna parameter with a condition on an earlier one (``alpha`` only with
``mi``; ``critic`` only with MI objectives; ``aug_p`` only with an augmentation policy; the layer map's
choices follow the features the loss reads, ``emd`` only with the losses that support it). A recipe's
``auto.space`` narrows or widens any dimension; :func:`apply_params` writes one trial's parameters into a
fresh copy of the base recipe, so no state leaks between trials (spec §6 item 10).

Usage::

    space = build_space(recipe, regression=False)
    params = sample(space, RandomSuggester(seed=0))
    trial_recipe = apply_params(space, params, recipe)
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from distill.augment import AUGMENTERS
from distill.config import DistillRecipe
from distill.objectives import EMD_LOSSES, INTERMEDIATE_LOSSES, LAYER_MAPS, MILoss, PREDICTION_LOSSES
from distill.objectives.critics import CRITICS
from distill.pipeline import loss_features
from shrink.digest import value_digest
from shrink.errors import UserError
from shrink.recipe import build_recipe

NO_INTERMEDIATE, NO_POLICY = "none", "none"
ALPHAS = (0.0, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0)  # the reference grids' values (spec §4)
AUG_PS = (0.1, 0.3, 0.5)
HARD_WEIGHTS = (0.0, 0.5)
MAX_POLICY_LENGTH = 3  # ordered subsets up to this length: 15 policies for 3 augmenters (spec §4)
LAYER_MAP_SIZES = (12, 4)  # a teacher/student depth at which each registered map is probed for its features


class Suggester(Protocol):
    """What a dimension draws from: an ``optuna.Trial``, or :class:`RandomSuggester` for candidate lists."""

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: ``choices`` (categorical) or ``low``..``high``; active when the parameter
    ``parent`` took one of ``parent_values``; written to the recipe at ``key`` (dotted; ``intermediate.X``
    is a key of the single intermediate entry).

    Usage: ``Dimension("alpha", "intermediate.alpha", choices=(0.5, 0.9), parent="intermediate", parent_values=("mi",))``
    """

    name: str
    key: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    parent: str | None = None
    parent_values: tuple[Any, ...] = ()

    def active(self, params: dict[str, Any]) -> bool:
        """True when this dimension takes part given the parameters drawn so far."""
        return self.parent is None or params.get(self.parent) in self.parent_values

    def suggest(self, suggester: Suggester) -> Any:
        """Draw a value. Usage: ``dim.suggest(trial)``."""
        if self.choices is not None:
            return suggester.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return suggester.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return suggester.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def admits(self, value: Any) -> bool:
        """True when ``value`` is one this dimension can take."""
        if self.choices is not None:
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (stored with the study, to refuse joining it with another space)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items() if v not in (None, (), False)}


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions in drawing order, and the base recipe they are applied to.

    Usage: ``space.digest()  # stored with the study``
    """

    dimensions: tuple[Dimension, ...]
    base: DistillRecipe

    def names(self) -> list[str]:
        """The parameter names. Usage: ``"alpha" in space.names()``."""
        return [dim.name for dim in self.dimensions]

    def digest(self) -> str:
        """A digest of the dimensions (not of the base recipe). Usage: ``study.user_attrs["space"] == space.digest()``."""
        return value_digest([dim.describe() for dim in self.dimensions])


class RandomSuggester:
    """Uniform draws with the Suggester interface, for candidate lists outside a study.

    Usage: ``sample(space, RandomSuggester(seed=3))``
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.rng.choice(list(choices))

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        if log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        return self.rng.uniform(low, high)

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int:
        return self.rng.randint(low, high)


# ------------------------------------------------------------------------------------------ registries
def mi_losses() -> tuple[str, ...]:
    """Registered intermediate losses built on MI-α (they take a critic). Usage: ``"nwj" in mi_losses()``."""
    return tuple(name for name in INTERMEDIATE_LOSSES.names()
                 if getattr(INTERMEDIATE_LOSSES.get(name), "func", INTERMEDIATE_LOSSES.get(name)) is MILoss)


def layer_maps_for(loss: str) -> tuple[str, ...]:
    """The registered layer maps a loss can use: those reading its features, ``emd`` only for EMD losses.

    Usage: ``layer_maps_for("cos")  # ('last', 'skip', 'tinybert')``
    """
    features = loss_features(loss)
    maps = []
    for name in LAYER_MAPS.names():
        layer_map = LAYER_MAPS.get(name)(*LAYER_MAP_SIZES)
        if layer_map.features == features and (not layer_map.transported or loss in EMD_LOSSES):
            maps.append(name)
    return tuple(maps)


def augmentation_dimensions(names: Sequence[str]) -> list[Dimension]:
    """Policy (ordered subsets of the augmenters ``names`` up to MAX_POLICY_LENGTH, or none), aug_p (with a
    policy) and mixup. Usage: ``augmentation_dimensions(AUGMENTERS.names())``
    """
    policies = [">".join(order) for length in range(1, MAX_POLICY_LENGTH + 1)
                for order in itertools.permutations(names, length)]
    return [Dimension("augment_policy", "distill.augment.policy", choices=(NO_POLICY, *policies)),
            Dimension("aug_p", "distill.augment.aug_p", choices=AUG_PS, parent="augment_policy",
                      parent_values=tuple(policies)),
            Dimension("mixup", "distill.augment.mixup", choices=(False, True))]


def default_dimensions(base: DistillRecipe, regression: bool) -> list[Dimension]:
    """The full space for ``base``: objectives from the registries, training ranges around its values.

    Usage: ``default_dimensions(recipe, regression=False)``
    """
    kd_losses = ("mse",) if regression else tuple(PREDICTION_LOSSES.names())
    losses = (NO_INTERMEDIATE, *INTERMEDIATE_LOSSES.names())
    lr = base.train.lr or 5e-5
    epochs = max(1, math.ceil(base.train.epochs))
    dims = [
        Dimension("kd_loss", "distill.kd.loss", choices=kd_losses),
        Dimension("temperature", "distill.kd.temperature", low=1.0, high=8.0, log=True, parent="kd_loss",
                  parent_values=("kl",)),
        Dimension("hard_weight", "distill.hard_weight", choices=HARD_WEIGHTS),
        Dimension("intermediate", "intermediate.loss", choices=losses),
        Dimension("alpha", "intermediate.alpha", choices=ALPHAS, parent="intermediate", parent_values=("mi",)),
        Dimension("critic", "intermediate.critic", choices=tuple(CRITICS.names()), parent="intermediate",
                  parent_values=mi_losses()),
        *layer_map_dimensions(losses[1:]),
        Dimension("inter_weight", "intermediate.weight", low=0.01, high=1.0, log=True, parent="intermediate",
                  parent_values=losses[1:]),
        Dimension("lr", "train.lr", low=lr / 10, high=lr * 10, log=True),
        Dimension("epochs", "train.epochs", low=max(1, math.ceil(epochs / 3)), high=epochs, integer=True),
        *augmentation_dimensions(AUGMENTERS.names()),
    ]
    return dims


def layer_map_dimensions(losses: Sequence[str], allowed: Sequence[str] | None = None) -> list[Dimension]:
    """One layer-map dimension per group of losses that share their map choices (Optuna needs a parameter's
    choices fixed, so ``layer_map/hidden+emd`` and ``layer_map/hidden`` are separate parameters).

    Usage: ``layer_map_dimensions(["mi", "cos"])``
    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for loss in losses:
        maps = tuple(m for m in layer_maps_for(loss) if allowed is None or m in allowed)
        groups.setdefault(maps, []).append(loss)
    return [Dimension(f"layer_map/{'+'.join(maps)}", "intermediate.layer_map", choices=maps, parent="intermediate",
                      parent_values=tuple(members)) for maps, members in groups.items() if maps]


# ------------------------------------------------------------------------------------------ narrowing
def build_space(base: DistillRecipe, regression: bool, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """The default space for ``base`` with the recipe's ``auto.space`` narrowing or widening dimensions.

    ``overrides`` maps a dimension to a list of values (categorical) or ``{low, high, log}`` (a range); a list
    of one value fixes it. ``student_layers`` (a list of depths) is searched only when given, for a
    ``from_teacher`` student. UserError on an unknown dimension, an invalid value or an empty space.
    Usage: ``build_space(recipe, False, {"kd_loss": ["kl"], "lr": {"low": 1e-4, "high": 1e-2}})``
    """
    if base.distill.stages:
        raise UserError("distill --auto searches one-stage pipelines; use a recipe without distill.stages")
    overrides = dict(overrides or {})
    dims = default_dimensions(base, regression)
    known = {dim.name.split("/")[0] for dim in dims} | {"student_layers"}
    for name in overrides:
        if name not in known:
            raise UserError(f"unknown search dimension '{name}' in auto.space; known: {', '.join(sorted(known))}")
    if "student_layers" in overrides:
        if base.distill.student_init != "from_teacher":
            raise UserError("auto.space.student_layers searches the depth of a from_teacher student; set "
                            "distill.student_init: from_teacher or drop the dimension")
        dims.append(Dimension("student_layers", "distill.student_layers", choices=()))
    narrowed = [_narrow(dim, overrides.get(dim.name.split("/")[0])) for dim in dims]
    return SearchSpace(tuple(_drop_orphans(narrowed, overrides.get("layer_map"))), base)


def _narrow(dim: Dimension, given: Any) -> Dimension:
    if given is None:
        return dim
    name = dim.name.split("/")[0]
    if isinstance(given, dict):
        unknown = set(given) - {"low", "high", "log"}
        if unknown or dim.choices is not None or not {"low", "high"} <= set(given):
            raise UserError(f"auto.space.{name}: give a list of values, or low and high (and log) for a "
                            f"numeric dimension; got {given}")
        low, high = given["low"], given["high"]
        if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low <= high):
            raise UserError(f"auto.space.{name}: low must be a number not above high; got {low}, {high}")
        return Dimension(**{**vars(dim), "low": low, "high": high, "log": bool(given.get("log", dim.log))})
    values = tuple(given) if isinstance(given, list) else (given,)
    if not values:
        raise UserError(f"auto.space.{name} is empty; give at least one value or leave the dimension out")
    if name == "augment_policy":
        augmenters = {c for c in dim.choices if ">" not in c} - {NO_POLICY}  # the length-1 policies
        bad = [v for v in values if v != NO_POLICY and not set(str(v).split(">")) <= augmenters]
        if bad:
            raise UserError(f"auto.space.augment_policy: {bad[0]!r} is not none or augmenters joined by '>' "
                            f"(known: {', '.join(sorted(augmenters))})")
    elif dim.choices and name not in ("layer_map", "student_layers"):
        bad = [v for v in values if v not in dim.choices]
        if bad:
            raise UserError(f"auto.space.{name}: {bad[0]!r} is not a valid value; valid: "
                            f"{', '.join(map(str, dim.choices))}")
    elif name == "student_layers" and not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                              for v in values):
        raise UserError(f"auto.space.student_layers: give positive layer counts; got {list(values)}")
    elif dim.choices is None:
        bad = [v for v in values if not isinstance(v, (int, float)) or isinstance(v, bool)]
        if bad:
            raise UserError(f"auto.space.{name}: {bad[0]!r} is not a number")
    if name == "layer_map":
        values = tuple(v for v in dim.choices if v in values)
    return Dimension(**{**vars(dim), "choices": values, "low": None, "high": None, "log": False})


def _drop_orphans(dims: list[Dimension], layer_maps: Any) -> list[Dimension]:
    """Remove intermediate losses left without a layer map, check every dimension still has values."""
    if layer_maps is not None:
        unknown = [m for m in (layer_maps if isinstance(layer_maps, list) else [layer_maps]) if m not in LAYER_MAPS]
        if unknown:
            raise UserError(f"auto.space.layer_map: {LAYER_MAPS.unknown_message(str(unknown[0]))}")
    mapped = {loss for dim in dims if dim.name.startswith("layer_map/") and dim.choices for loss in dim.parent_values}
    out = []
    for dim in dims:
        if dim.name == "intermediate":
            kept = tuple(c for c in dim.choices if c == NO_INTERMEDIATE or c in mapped)
            if not kept:
                raise UserError("the search space is empty after narrowing: no intermediate loss has a layer map; "
                                "widen auto.space.layer_map or auto.space.intermediate")
            dim = Dimension(**{**vars(dim), "choices": kept})
        if dim.name.startswith("layer_map/") and not dim.choices:
            continue
        if dim.choices is not None and not dim.choices:
            raise UserError(f"the search space is empty after narrowing: dimension '{dim.name}' has no values")
        out.append(dim)
    return out


# ------------------------------------------------------------------------------------------ trials
def sample(space: SearchSpace, suggester: Suggester) -> dict[str, Any]:
    """Draw one valid pipeline: each active dimension in order. Usage: ``sample(space, trial)``."""
    params: dict[str, Any] = {}
    for dim in space.dimensions:
        if dim.active(params):
            params[dim.name] = dim.suggest(suggester)
    return params


def is_valid(space: SearchSpace, params: dict[str, Any]) -> bool:
    """True when ``params`` are exactly the active dimensions, each with a value it admits.

    Usage: ``assert is_valid(space, trial.params)``
    """
    expected: dict[str, Any] = {}
    for dim in space.dimensions:
        if dim.active(expected):
            if dim.name not in params or not dim.admits(params[dim.name]):
                return False
            expected[dim.name] = params[dim.name]
    return expected == params


def apply_params(space: SearchSpace, params: dict[str, Any], output_dir: str | None = None) -> DistillRecipe:
    """A fresh DistillRecipe: the base recipe with one trial's parameters written in.

    Usage: ``apply_params(space, {"kd_loss": "kl", "temperature": 2.0, ...}, "study/trials/0003")``
    """
    raw = space.base.model_dump(mode="json", exclude={"output_dir"})
    entry: dict[str, Any] = {}
    for dim in space.dimensions:
        if dim.name not in params:
            continue
        value = params[dim.name]
        if dim.key.startswith("intermediate."):
            entry[dim.key.split(".", 1)[1]] = value
        elif dim.key == "distill.augment.policy":
            _set(raw, dim.key, [] if value == NO_POLICY else value.split(">"))
        else:
            _set(raw, dim.key, value)
    if "kd_loss" in params and "temperature" not in params:
        _set(raw, "distill.kd.temperature", 1.0)  # T only matters to kl; ce and mse run at the reference T = 1
    if "loss" in entry:
        raw["distill"]["intermediate"] = [] if entry["loss"] == NO_INTERMEDIATE else [entry]
    raw["output_dir"] = output_dir
    return build_recipe(raw, DistillRecipe, source="AutoDistiller trial")


def recipe_params(space: SearchSpace) -> dict[str, Any] | None:
    """The base recipe's own pipeline as parameters (the default warm start), or None when it lies outside
    the space. Usage: ``study.enqueue_trial(recipe_params(space))``
    """
    section = space.base.distill
    entry = section.intermediate[0] if len(section.intermediate) == 1 else None
    source: dict[str, Any] = {
        "kd_loss": section.kd.loss if section.kd else None, "temperature": section.kd.temperature if section.kd else None,
        "hard_weight": section.hard_weight, "intermediate": entry.loss if entry else NO_INTERMEDIATE,
        "alpha": entry.alpha if entry and entry.alpha is not None else 0.9,
        "critic": (entry.critic or "mlp") if entry else None, "layer_map": entry.layer_map if entry else None,
        "inter_weight": entry.weight if entry else None, "lr": space.base.train.lr,
        "epochs": space.base.train.epochs, "student_layers": section.student_layers,
    }
    augment = getattr(section, "augment", None)  # present once the augmentation stage is installed
    if augment is not None:
        source.update({"augment_policy": ">".join(augment.policy) or NO_POLICY, "aug_p": augment.aug_p,
                       "mixup": augment.mixup})
    if len(section.intermediate) > 1:
        return None
    params: dict[str, Any] = {}
    for dim in space.dimensions:
        if not dim.active(params):
            continue
        value = source.get(dim.name.split("/")[0])
        if dim.integer and isinstance(value, float) and value.is_integer():
            value = int(value)
        if value is None or not dim.admits(value):
            return None
        params[dim.name] = value
    return params


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        if not isinstance(tree.get(key), dict):
            tree[key] = {}  # a section the base recipe turned off (kd: null) comes back on when searched
        tree = tree[key]
    tree[leaf] = value


__all__ = [
    "Dimension",
    "RandomSuggester",
    "SearchSpace",
    "Suggester",
    "apply_params",
    "augmentation_dimensions",
    "build_space",
    "default_dimensions",
    "is_valid",
    "layer_map_dimensions",
    "layer_maps_for",
    "mi_losses",
    "recipe_params",
    "sample",
]
