"""AutoDistiller's Optuna study: storage, workers, the trial objective, warm starts, pruning.

* **Storage.** SQLite in the study folder by default; any Optuna RDB URL (``postgresql://...``) or a
  journal file (a path) shares one study: the same command started N times, on one machine or several, is
  N workers. RDB storages keep a heartbeat: a worker killed mid-trial leaves a trial that the next trial
  start marks failed and re-queues (``RetryHeartbeatStaleTrialCallback``); finished trials are untouched.
* **Trials.** Each trial draws a pipeline from :mod:`distill.auto.space` (TPE, multivariate and grouped, by
  default), builds a fresh recipe from it and runs the ordinary ``distill`` flow in ``STUDY/trials/NNNN``.
  Every epoch's dev score goes to ``trial.report`` so the pruner (Hyperband or successive halving, reduction
  factor 3) can stop a poor trial early. The objective is retention = student / teacher dev score; with
  ``latency`` or ``size`` it is multi-objective against the student's ONNX Runtime latency or ONNX size.
* **Teacher.** A teacher without a task head is fine-tuned once into ``STUDY/teacher`` (one worker does
  it under a lock, the others wait and reuse it); every trial distills from that folder.

Usage::

    result = run_auto(load_recipe("demo", AutoDistillRecipe, {"auto.trials": 8}), resume=False)
    result.study.best_trial.params
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from distill.auto.config import AutoDistillRecipe, AutoSection
from distill.auto.space import SearchSpace, apply_params, build_space, recipe_params, sample
from distill.config import DistillRecipe
from distill.run import distill, finetune_teacher, plan_distillation, teacher_folder
from shrink.errors import UserError
from shrink.experiment import default_output_dir
from shrink.recipe import ModelSection
from shrink.registry import Registry
from shrink.runs import RunDir
from shrink.train import epoch_listener

TRIALS_DIR, TEACHER_LOCK, STUDY_DB = "trials", ".teacher.lock", "study.db"
SCHEMA_RACE_RETRIES = 5
# What a worker sees when another one created Optuna's tables first (SQLite, PostgreSQL wordings).
SCHEMA_RACE_ERRORS = ("already exists", "duplicate key", "UNIQUE constraint", "UniqueViolation")
GRACE_BEATS = 3  # a running trial whose worker missed this many heartbeats is stale
# Failures of one pipeline (recorded on its trial; the search goes on). Anything else stops the worker.
TRIAL_ERRORS = (UserError, RuntimeError, ValueError, FloatingPointError)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class Objective:
    """One optimised figure of a finished trial: its direction and how it is read from the trial's metrics.

    Usage: ``OBJECTIVES.get("latency").read(metrics, run_dir)``
    """

    direction: str
    read: Callable[[dict[str, Any], Path], float]
    needs_onnx: bool = False


def _onnx_latency_ms(metrics: dict[str, Any], run: Path) -> float:
    from shrink.bench import measure_onnx

    figures = measure_onnx(run / "model.onnx", batch_sizes=(1,), seq_len=metrics["max_length"])
    return float(figures["latency"]["1"]["median_ms"])


def _onnx_bytes(metrics: dict[str, Any], run: Path) -> float:
    from shrink.bench import onnx_weights

    return float(onnx_weights(run / "model.onnx")[1])


def _retention(metrics: dict[str, Any], run: Path) -> float:
    if metrics.get("retention") is None:
        raise UserError(f"the teacher scores 0 {metrics['primary_metric']} on dev, so retention (student / teacher) "
                        "is undefined; fine-tune the teacher better or pick another metric")
    return float(metrics["retention"])


# group=True, heartbeats and their retry callback are marked experimental by Optuna; they are what we use.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

OBJECTIVES: Registry[Objective] = Registry("objective")
OBJECTIVES.add("score", Objective("maximize", _retention))
OBJECTIVES.add("latency", Objective("minimize", _onnx_latency_ms, needs_onnx=True))
OBJECTIVES.add("size", Objective("minimize", _onnx_bytes, needs_onnx=True))


@dataclass
class AutoResult:
    """What :func:`run_auto` returns: the study, its folder, the search space and the outputs written.

    Usage: ``run_auto(recipe).outputs["best_recipe"]``
    """

    study: optuna.Study
    folder: Path
    space: SearchSpace
    outputs: dict[str, Any]


# ---------------------------------------------------------------------------------------------- storage
def describe_storage(spec: str) -> str:
    """The storage as it may be printed (an RDB URL without its password). Usage: ``describe_storage(url)``."""
    if "://" not in spec:
        return spec
    from sqlalchemy.engine import make_url

    with contextlib.suppress(Exception):
        return make_url(spec).render_as_string(hide_password=True)
    return spec.split("://", 1)[0] + "://..."


def open_storage(spec: str, auto: AutoSection) -> optuna.storages.BaseStorage:
    """An Optuna storage from an RDB URL (heartbeat and retry on) or a journal file path.

    UserError naming the storage when it cannot be reached. Usage: ``open_storage("sqlite:///s.db", auto)``
    """
    failure: Exception = RuntimeError("no attempt")
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            if "://" not in spec:
                Path(spec).parent.mkdir(parents=True, exist_ok=True)
                return JournalStorage(JournalFileBackend(spec))
            return RDBStorage(spec, engine_kwargs=_engine_options(spec), heartbeat_interval=auto.heartbeat_s,
                              grace_period=GRACE_BEATS * auto.heartbeat_s, heartbeat_stale_trial_callback=
                              RetryHeartbeatStaleTrialCallback(max_retry=auto.max_retry))
        except Exception as err:  # sqlalchemy and driver errors differ by backend; all mean "cannot use it"
            if attempt < SCHEMA_RACE_RETRIES and any(s in str(err) for s in SCHEMA_RACE_ERRORS):
                time.sleep(1.0)  # workers started together raced to create the tables: the others won
                continue
            failure = err
            break
    reason = str(failure).strip().splitlines()[0] if str(failure).strip() else type(failure).__name__
    raise UserError(f"cannot open the study storage {describe_storage(spec)}: {reason}; check the URL (or path) "
                    "and that the database server is running and reachable") from None


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # several local workers wait for SQLite's write lock
    return {"pool_pre_ping": True}


def open_study(auto: AutoSection, storage: optuna.storages.BaseStorage, name: str, space: SearchSpace,
               directions: list[str]) -> optuna.Study:
    """Create the study, or join the one of that name when its space and directions match ours.

    Usage: ``study = open_study(auto, storage, "auto-demo", space, ["maximize"])``
    """
    sampler = (optuna.samplers.TPESampler(multivariate=True, group=True, seed=auto.seed) if auto.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=auto.seed))
    pruner = make_pruner(auto.pruner, space)
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=directions, sampler=sampler,
                                    pruner=pruner, load_if_exists=True)
    except Exception as err:
        raise UserError(f"cannot create or load study '{name}': {str(err).splitlines()[0]}") from None
    wanted = [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else optuna.study.StudyDirection.MINIMIZE
              for d in directions]
    if study.directions != wanted:
        raise UserError(f"study '{name}' exists with directions {[d.name.lower() for d in study.directions]}, not "
                        f"{directions}; pass another --study-name or the same --objectives")
    saved = study.user_attrs.get("space")
    if saved is None:
        study.set_user_attr("space", space.digest())
        study.set_user_attr("space_dimensions", [dim.describe() for dim in space.dimensions])
    elif saved != space.digest():
        raise UserError(f"study '{name}' exists with another search space; pass another --study-name, or the "
                        "recipe and auto.space the study was started with")
    return study


def make_pruner(kind: str, space: SearchSpace) -> optuna.pruners.BasePruner:
    """Hyperband or successive halving (reduction factor 3, resource = epochs), or none.

    Usage: ``make_pruner("hyperband", space)``
    """
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    epochs = max((dim.high for dim in space.dimensions if dim.name == "epochs" and dim.high is not None),
                 default=space.base.train.epochs)
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(int(epochs), 1), reduction_factor=3)


# ---------------------------------------------------------------------------------------------- teacher
@contextlib.contextmanager
def folder_lock(path: Path) -> Iterator[None]:
    """Wait for an exclusive lock on ``path`` (a lock file), so one worker does a shared job at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_teacher(base: DistillRecipe, folder: Path) -> tuple[DistillRecipe, Any]:
    """Fine-tune any teacher without a task head once into the study folder (under a lock), and point the
    base recipe at the result. Returns the recipe every trial starts from and the base plan.

    Usage: ``base, plan = prepare_teacher(recipe.distill_recipe(), Path("runs/auto-demo"))``
    """
    plan = plan_distillation(base)
    if all(member.trained for member in plan.members):
        return base, plan
    names = []
    with folder_lock(folder / TEACHER_LOCK):
        for index, member in enumerate(plan.members):
            if member.trained:
                names.append(member.name)
                continue
            target = teacher_folder_of(folder, index, len(plan.members))
            finetune_teacher(plan, member, target)
            names.append(str(target.resolve()))  # the best recipe reruns from any folder
    update = {"distill": base.distill.model_copy(update={"teacher": ",".join(names)})}
    return base.model_copy(update=update), plan


def teacher_folder_of(folder: Path, index: int, count: int) -> Path:
    """The study's teacher folder for member ``index``: distill's own naming, inside the study folder."""
    return teacher_folder(RunDir(folder), index, count)


# ---------------------------------------------------------------------------------------------- trials
class TrialObjective:
    """The function Optuna calls per trial: draw a pipeline, run ``distill`` on a fresh recipe, report each
    epoch to the pruner, return the objectives.

    Usage: ``study.optimize(TrialObjective(space, folder, ["score"], "accuracy"), n_trials=4)``
    """

    def __init__(self, space: SearchSpace, folder: Path, objectives: list[str], primary: str,
                 deadline: float | None = None) -> None:
        self.space, self.folder, self.primary, self.deadline = space, folder, primary, deadline
        self.names, self.objectives = objectives, [OBJECTIVES.get(name) for name in objectives]

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        params = sample(self.space, trial)
        run_dir = self.folder / TRIALS_DIR / f"{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        recipe = apply_params(self.space, params, str(run_dir))
        if any(objective.needs_onnx for objective in self.objectives):
            recipe.distill.export_onnx = True
        started = time.perf_counter()
        try:
            with epoch_listener(self._reporter(trial)):
                metrics = distill(recipe, overwrite=True).metrics
        except TRIAL_ERRORS as err:  # a combination these models cannot run, or one that diverged
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            raise
        finally:
            trial.set_user_attr("wall_s", time.perf_counter() - started)
        metrics["max_length"] = recipe.data.max_length
        values = [objective.read(metrics, run_dir) for objective in self.objectives]
        trial.set_user_attr("retention", metrics["retention"])
        trial.set_user_attr("student_score", metrics["student_dev"][self.primary])
        trial.set_user_attr("teacher_score", metrics["teacher_dev"][self.primary])
        for name, value in zip(self.names, values):
            trial.set_user_attr(name, value)
        return values[0] if len(values) == 1 else values

    def _reporter(self, trial: optuna.Trial) -> Callable[[dict[str, float]], None]:
        """Report each epoch's dev score (retention's numerator; the teacher is the same in every trial) and stop
        the trial after an epoch that ends past the deadline (``time.monotonic()``), unless it was its last."""
        multi = len(self.objectives) > 1  # Optuna prunes single-objective studies only

        def report(entry: dict[str, float]) -> None:
            epoch = int(entry["epoch"])
            if not multi and self.primary in entry:
                trial.report(entry[self.primary], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.primary} {entry[self.primary]:.4g}")
            if self.deadline is not None and time.monotonic() >= self.deadline and not entry.get("last"):
                raise optuna.TrialPruned(f"stopped after epoch {epoch}: the worker's --timeout is spent")
        return report


class TrialBudget:
    """Stop the study once ``trials`` trials are spent, over all workers: finished ones and, where the storage
    keeps heartbeats, the ones other workers are running now, so N workers do not overrun the budget by up to
    N - 1 trials. A trial failed by heartbeat and retried is not counted (its retry is). Two workers that
    finish within the same few milliseconds may both start one more: the budget is a count, not a lock.
    Usage: ``study.optimize(f, callbacks=[TrialBudget(20, storage)])``
    """

    def __init__(self, trials: int, storage: optuna.storages.BaseStorage) -> None:
        self.trials = trials
        # Without heartbeats (a journal file) a dead worker's trial would stay running for ever and hold a
        # slot: there only finished trials count.
        heartbeat = isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None
        self.counted = FINISHED_STATES + ((TrialState.RUNNING,) if heartbeat else ())

    def spent(self, study: optuna.Study) -> int:
        """Trials that count. Usage: ``TrialBudget(20, storage).spent(study)``."""
        # A killed worker's trial runs until failed: fail stale ones first, so it does not hold a slot (its
        # retry waits in the queue and takes the slot when a worker starts it).
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        retried = {number for trial in trials for number in RetryHeartbeatStaleTrialCallback.retry_history(trial)}
        return sum(1 for trial in trials if trial.state in self.counted and trial.number not in retried)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.spent(study) >= self.trials:
            study.stop()


# ---------------------------------------------------------------------------------------------- command
def study_folder(recipe: AutoDistillRecipe) -> Path:
    """``output_dir``, or ``runs/auto-<student>-<dataset>``. Usage: ``study_folder(recipe)``."""
    if recipe.output_dir:
        return Path(recipe.output_dir)
    student = recipe.model.name or "copy"
    return Path(default_output_dir(recipe.model_copy(update={"model": ModelSection(name=student)}), "auto"))


def warm_starts(study: optuna.Study, space: SearchSpace, recommended: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Enqueue the recommended pipelines, then the recipe's own, as the study's first trials (once).

    A recommendation learnt from trials that did not search some dimension (augmentation, say) takes the
    recipe's own value for it, where active, rather than a random one.
    Usage: ``warm_starts(study, space, ranked[:3])``
    """
    default = recipe_params(space)
    queued = [complete(space, params, default or {}) for params in recommended]
    if default is not None:
        queued.append(default)
    for params in queued:
        study.enqueue_trial(params, skip_if_exists=True)
    return queued


def complete(space: SearchSpace, params: dict[str, Any], fallback: dict[str, Any]) -> dict[str, Any]:
    """``params`` with each active dimension it does not name taken from ``fallback``, in the space's order.

    Usage: ``complete(space, {"kd_loss": "kl"}, recipe_params(space))``
    """
    filled = dict(params)
    for dim in space.dimensions:
        if dim.name not in filled and dim.name in fallback and dim.active(filled):
            filled[dim.name] = fallback[dim.name]
    return filled


def run_auto(recipe: AutoDistillRecipe, resume: bool = False) -> AutoResult:
    """The whole ``distill --auto`` command: teacher, space, study, warm starts, trials, outputs.

    Usage: ``run_auto(load_recipe("demo", AutoDistillRecipe, {"auto.trials": 4})).outputs``
    """
    from distill.auto.outputs import write_outputs
    from distill.auto.recommend import dataset_meta_features, recommend

    auto = recipe.auto
    for name in auto.objectives:
        OBJECTIVES.canonical(name)
    if len(set(auto.objectives)) != len(auto.objectives) or auto.objectives[0] != "score":
        raise UserError(f"--objectives must start with score and name each objective once; got "
                        f"{','.join(auto.objectives)} (e.g. score or score,latency)")
    folder = study_folder(recipe)
    finished = (folder / "metrics.json").is_file()
    if resume and not folder.is_dir():
        raise UserError(f"cannot resume: study folder {folder} does not exist; run without --resume to start it")
    if finished and not resume:
        raise UserError(f"study {folder} has finished; pass --resume to continue it (raise --trials to add "
                        "trials) or another --out")
    build_space(recipe.distill_recipe(), False, auto.space)  # refuse a bad space before any work
    storage_spec = auto.storage or f"sqlite:///{(folder / STUDY_DB).resolve()}"
    if auto.storage is None:
        folder.mkdir(parents=True, exist_ok=True)
    storage = open_storage(storage_spec, auto)
    base, plan = prepare_teacher(recipe.distill_recipe(), folder)
    space = build_space(base, plan.task.is_regression, auto.space)
    name = auto.study_name or folder.name
    directions = [OBJECTIVES.get(o).direction for o in auto.objectives]
    study = open_study(auto, storage, name, space, directions)
    if "meta_features" not in study.user_attrs:
        study.set_user_attr("meta_features", dataset_meta_features(plan))
        study.set_user_attr("task", plan.task.name)
    if not study.trials:
        ranked = recommend(study, space, auto)[: auto.top_k] if auto.recommend else []
        warm_starts(study, space, ranked)
    primary = plan.task.metrics[0]
    del plan  # trials load their own models; the base plan's are not needed any more
    budget = TrialBudget(auto.trials, storage)
    if budget.spent(study) < auto.trials:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        deadline = time.monotonic() + auto.timeout if auto.timeout else None
        study.optimize(TrialObjective(space, folder, auto.objectives, primary, deadline), timeout=auto.timeout,
                       callbacks=[budget], catch=TRIAL_ERRORS, gc_after_trial=True)
    outputs = write_outputs(study, space, folder, auto, storage_spec)
    return AutoResult(study, folder, space, outputs)


__all__ = [
    "AutoResult",
    "OBJECTIVES",
    "Objective",
    "TrialBudget",
    "TrialObjective",
    "describe_storage",
    "folder_lock",
    "make_pruner",
    "open_storage",
    "open_study",
    "prepare_teacher",
    "run_auto",
    "study_folder",
    "warm_starts",
]
