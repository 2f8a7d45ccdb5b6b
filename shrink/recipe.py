"""Recipes: YAML files loaded with a safe loader into validated, typed configs.

A recipe has one section per concern (``model``, ``data``, ``train``; methods add their own by
subclassing :class:`Recipe`). Unknown or misspelled keys are errors that name the key and suggest the
closest valid one; command-line flags override recipe values as dotted keys (``train.lr``).

Usage::

    recipe = load_recipe("demo", overrides={"train.epochs": 1})   # a shipped recipe, or a YAML path
    save_recipe(recipe, "runs/demo/recipe.yaml")
"""
from __future__ import annotations

import difflib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from shrink.errors import UserError
from shrink.runs import atomic_write_text

# Shipped recipes are package data (shrink/recipes/*.yaml), read through importlib.resources so an
# installed wheel finds them wherever it is run from.
RECIPES_PACKAGE, RECIPES_FOLDER = "shrink", "recipes"


class Section(BaseModel):
    """Base of every recipe section: unknown keys are refused, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads `true` as 1 for an int; in a recipe that is a typo, not a number
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and not _takes_bool(field.annotation):
            raise ValueError(f"expected a number or text, got the boolean {str(value).lower()}")
        return value


def _takes_bool(annotation: Any) -> bool:
    return annotation in (bool, Any) or any(_takes_bool(arg) for arg in get_args(annotation))


class ModelSection(Section):
    """Which model: a zoo name, a Hugging Face alias / hub id, or a local directory."""

    name: str = "resnet20"
    args: dict[str, Any] = Field(default_factory=dict)


class DataSection(Section):
    """Which data: a dataset or GLUE task name, where its files are, and how to read them."""

    dataset: str = "synthetic-image"
    data_dir: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    domain_column: str | None = None
    max_length: int = Field(128, gt=0)
    max_train_samples: int | None = Field(None, gt=0)
    max_eval_samples: int | None = Field(None, gt=0)
    augment: bool = True


class TrainConfig(Section):
    """The training engine's settings (see :mod:`shrink.train`; optimizer and schedule: :mod:`shrink.optim`).

    ``milestones`` (epochs) and ``gamma`` belong to ``schedule: multistep``; ``momentum`` to ``optimizer: sgd``.
    ``select_on`` is where the best epoch is chosen: the dev split (whose score is then optimistic), or
    ``train-holdout``, a seeded slice of the training data held out of training, so dev is only reported.
    ``report_to`` names experiment trackers that receive the loss, lr and dev metrics (:mod:`shrink.tracking`).
    """

    epochs: float = Field(3, gt=0)
    max_steps: int | None = Field(None, gt=0)
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int | None = Field(None, gt=0)
    lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: Literal["linear", "cosine", "constant", "multistep"] = "linear"
    milestones: list[float] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0, le=1)
    grad_accum: int = Field(1, gt=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 42
    select_on: Literal["dev", "train-holdout"] = "dev"
    group_by_length: bool = False
    checkpoint_every: int = Field(0, ge=0)
    keep_checkpoints: int = Field(2, gt=0)
    num_workers: int = Field(0, ge=0)
    progress: bool = True
    verbosity: Literal["quiet", "normal", "verbose"] = "normal"
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _milestones_match_schedule(self) -> TrainConfig:
        if self.schedule == "multistep" and not self.milestones:
            raise ValueError("schedule 'multistep' needs milestones (epochs at which the lr is multiplied by gamma)")
        if self.milestones and self.schedule != "multistep":
            raise ValueError(f"milestones are only used by schedule 'multistep', not '{self.schedule}'")
        return self


class Recipe(Section):
    """A whole recipe for ``shrink train``; method recipes extend it with their own section."""

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output_dir: str | None = None


R = TypeVar("R", bound=Recipe)


def shipped_recipes() -> Traversable:
    """The folder of recipes shipped inside the package. Usage: ``(shipped_recipes() / "demo.yaml").read_text()``."""
    return resources.files(RECIPES_PACKAGE) / RECIPES_FOLDER


def recipe_path(name_or_path: str) -> Path | Traversable:
    """A recipe file from a path, else by name from ``./recipes`` or the shipped recipes (``demo`` -> demo.yaml).

    A path to a missing file falls back on its name, so ``recipes/demo.yaml`` works from any folder.
    Usage: ``read_yaml(recipe_path("demo"))``
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    for folder in (Path.cwd() / "recipes", shipped_recipes()):
        candidate = folder / f"{path.stem}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(list_recipes()) or "none"
    raise UserError(f"recipe '{name_or_path}' not found; pass a YAML file or one of: {known}")


def list_recipes() -> list[str]:
    """Names of the shipped recipes. Usage: ``"demo" in list_recipes()``."""
    folder = shipped_recipes()
    if not folder.is_dir():
        return []
    return sorted(item.name.removesuffix(".yaml") for item in folder.iterdir() if item.name.endswith(".yaml"))


# A recipe's method section names the command that runs it; one without is a `shrink train` recipe.
SECTION_COMMANDS = {"distill": "distill", "prune": "prune", "assemble": "assemble"}


def describe_recipe(name: str) -> tuple[str, str]:
    """The command a recipe is for and the first sentence of the comment at its top.

    Usage: ``command, summary = describe_recipe("demo")``
    """
    path = recipe_path(name)
    text = path.read_text(encoding="utf-8")
    command = next((cmd for key, cmd in SECTION_COMMANDS.items() if key in read_yaml(path)), "shrink train")
    first = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
    return command, first.split(". ")[0].split(" (")[0].rstrip(".:")


def read_yaml(path: Path | Traversable) -> dict[str, Any]:
    """Parse a YAML mapping with the safe loader; UserError on syntax errors or a non-mapping."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"cannot read recipe {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise UserError(f"recipe {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} must be a mapping of sections (model:, data:, train:, ...)")
    return data


def build_recipe(raw: Mapping[str, Any], schema: type[R] = Recipe, overrides: Mapping[str, Any] | None = None,
                 source: str = "recipe") -> R:
    """Validate ``raw`` (plus dotted ``overrides`` whose value is not None) into ``schema``.

    Usage: ``build_recipe({"train": {"lr": 0.1}}, overrides={"train.epochs": 2})``
    """
    merged = _deep_copy(raw)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(merged, dotted, value)
    try:
        return schema.model_validate(merged)
    except ValidationError as err:
        raise UserError(_explain(err, schema, source)) from None


def load_recipe(name_or_path: str | None, schema: type[R] = Recipe,
                overrides: Mapping[str, Any] | None = None) -> R:
    """Load a recipe file (or defaults when None) and apply CLI overrides.

    Usage: ``load_recipe("demo", overrides={"train.lr": 1e-3})``
    """
    if name_or_path is None:
        return build_recipe({}, schema, overrides, source="flags")
    path = recipe_path(name_or_path)
    return build_recipe(read_yaml(path), schema, overrides, source=str(path))


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the resolved recipe as YAML (atomically), so the run can be reproduced."""
    text = yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
    atomic_write_text(path, text)


def _deep_copy(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in raw.items()}


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[leaf] = value


def _valid_keys(schema: type[BaseModel], parents: tuple[str, ...]) -> list[str]:
    model: Any = schema
    for key in parents:
        field = model.model_fields.get(key) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = _optional_section(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _optional_section(annotation: Any) -> Any:
    """The section inside an optional one (``MoESection | None`` -> ``MoESection``), else ``annotation``."""
    sections = [arg for arg in get_args(annotation) if isinstance(arg, type) and issubclass(arg, BaseModel)]
    return sections[0] if len(sections) == 1 else annotation


def validator_message(err: ValidationError) -> str:
    """The first error's sentence without pydantic's "Value error, " prefix.

    Usage: ``raise ValueError(f"prune.finetune: {validator_message(err)}")``
    """
    return err.errors()[0]["msg"].removeprefix("Value error, ")


def _explain(err: ValidationError, schema: type[BaseModel], source: str) -> str:
    first = err.errors()[0]
    loc = tuple(str(part) for part in first["loc"])
    dotted = ".".join(loc)
    if first["type"] == "extra_forbidden":
        parent = ".".join(loc[:-1])
        valid = _valid_keys(schema, loc[:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        hint = f"; did you mean '{'.'.join((*loc[:-1], close[0]))}'?" if close else ""
        where = f" in section '{parent}'" if parent else ""
        return f"{source}: unknown key '{dotted}'{where}{hint} valid keys: {', '.join(valid)}"
    if first["type"] == "value_error":  # a validator's own sentence: the input is a whole section, leave it out
        where = f"'{dotted}': " if dotted else ""
        return f"{source}: {where}{validator_message(err)}"
    return f"{source}: '{dotted}': {first['msg']} (got {first.get('input')!r})"
