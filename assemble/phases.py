"""The ``assemble`` run folder: one run directory per phase, shared by processes that incubate concurrently.

Layout::

    RUN/recipe.yaml                  the resolved recipe (every process checks it agrees)
    RUN/meta/                        run directory: stages.safetensors (the meta model), metrics.json
    RUN/incubate-<i>/                run directory per module: module.safetensors, metrics.json
    RUN/assemble/                    stages.safetensors (the assembled target), dev metrics before finetuning
    RUN/finetune/                    checkpoints while it runs, model/ (the plain zoo / HF model), metrics.json
    RUN/e2e/                         optional end-to-end baseline (assemble.run_e2e)
    RUN/model/, RUN/metrics.json, RUN/report.md, RUN/model.onnx   the summary, written once all is done

A phase whose folder is complete is skipped; an interrupted one resumes from its checkpoints. Each phase folder
is locked by the process that runs it (:mod:`shrink.runlock`), so ``assemble incubate --module i`` may run in
as many processes (or machines sharing the folder) as there are modules; the root folder itself is not locked.
Stage files carry the builder's signature, checked before use: a meta model for another model, a missing
module (named) or modules of different target shapes are refused before anything is written.

Usage::

    assembly = prepare_assembly(recipe)
    run_phases(assembly, ["meta", "incubate"], module=2)
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from assemble.config import PHASES, AssembleRecipe, PhaseSection
from assemble.cost import add_costs, phase_cost, stage_flops
from assemble.incubate import AssemblyTrainer, meta_states
from assemble.staged import StagedBuilder, StagedModel, staged_builder
from assemble.store import load_stages, save_stages
from shrink.errors import UserError
from shrink.experiment import Experiment, default_output_dir, prepare_experiment, refuse_changes, selection_splits
from shrink.experiment import dotted
from shrink.models import load_model, save_model
from shrink.recipe import read_yaml, save_recipe
from shrink.runs import RECIPE_FILE, RunDir, atomic_dir, check_output_path, is_run_dir
from shrink.train import TrainResult, process_state

META, ASSEMBLED, FINETUNE, E2E = "meta", "assemble", "finetune", "e2e"
STAGES_FILE, MODULE_FILE = "stages.safetensors", "module.safetensors"
# Recipe keys a later invocation may change without invalidating finished phases.
FREE_KEYS = ("export_onnx", "run_e2e", "e2e", "meta_model")
META_HINT = "run `assemble --phase meta` with this recipe first, or pass the right --meta-model"


@dataclass
class Assembly:
    """A recipe resolved into the task, the builder, the procedure and the run folder."""

    recipe: AssembleRecipe
    experiment: Experiment
    builder: StagedBuilder
    trainer: AssemblyTrainer
    root: Path

    def phase_path(self, name: str) -> Path:
        return self.root / name

    def signature(self) -> dict[str, Any]:
        """What the stage files must have been trained for: the builder's signature and the dataset."""
        return {**self.builder.signature(), "dataset": self.experiment.task.name}

    def example_batch(self) -> dict:
        """One dev example, collated, for FLOP counting."""
        return self.experiment.collate([self.experiment.task.dev[0]])

    @property
    def samples(self) -> int:
        """Training examples per epoch (the training split less a ``train-holdout`` selection slice)."""
        return len(selection_splits(self.experiment.task, self.recipe.train)[0])  # type: ignore[arg-type]


def prepare_assembly(recipe: AssembleRecipe) -> Assembly:
    """Load the task and build the staged builder; refuses a bad split before anything is written.

    Usage: ``assembly = prepare_assembly(load_recipe("vit-assemble", AssembleRecipe))``
    """
    experiment = prepare_experiment(recipe)
    modules, depths = recipe.assemble.module_split()
    builder = staged_builder(experiment.model, modules, depths, meta_depth=recipe.assemble.meta_depth)
    recipe.output_dir = recipe.output_dir or default_output_dir(recipe, "assemble")
    return Assembly(recipe, experiment, builder, AssemblyTrainer(builder, experiment, recipe.assemble),
                    Path(recipe.output_dir))


def open_root(assembly: Assembly, overwrite: bool = False) -> None:
    """Create the run folder with its recipe, or check that an existing one was started with the same recipe
    (the main process of a multi-process launch does; the others wait for it)."""
    state = process_state()
    if state.is_main_process:
        _open_root(assembly, overwrite)
    state.wait_for_everyone()


def _open_root(assembly: Assembly, overwrite: bool) -> None:
    root, recipe = assembly.root, assembly.recipe
    check_output_path(root, "--out")
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} is a file, not a run folder; pass another --out")
    saved = root / RECIPE_FILE
    if root.is_dir() and any(root.iterdir()) and not saved.is_file():
        raise UserError(f"{root} is not an assemble run folder (no {RECIPE_FILE}) and is not empty; pass a new --out")
    if overwrite and saved.is_file():
        shutil.rmtree(root)
    if saved.is_file():
        probe = recipe.model_copy(deep=True)
        previous = read_yaml(saved).get("assemble") or {}
        for key in FREE_KEYS:  # these do not change what a phase computes
            if key in previous:
                setattr(probe.assemble, key, previous[key])
        try:
            refuse_changes(saved, probe)
        except UserError as err:
            raise UserError(f"{err} (its finished phases depend on them)".replace("--resume", "this run folder")) \
                from None
        return
    root.mkdir(parents=True, exist_ok=True)
    save_recipe(recipe, saved)


@contextlib.contextmanager
def phase_run(assembly: Assembly, name: str) -> Iterator[RunDir | None]:
    """The locked run directory of phase ``name`` (resumed when it holds work), or None when it is complete.

    Under a multi-process launch the main process creates and locks it; the others use it once it exists.
    """
    path = assembly.phase_path(name)
    if RunDir(path).is_complete():
        print(f"{name}: complete, skipping")
        yield None
        return
    state = process_state()
    if not state.is_main_process:
        state.wait_for_everyone()
        yield RunDir(path)
        return
    has_work = path.is_dir() and is_run_dir(path)
    with RunDir.create(path, resume=has_work) as run:
        save_recipe(assembly.recipe, run / RECIPE_FILE)
        state.wait_for_everyone()
        yield run


def _phase_record(assembly: Assembly, name: str, model: StagedModel, result: TrainResult, trained: set[int],
                  epochs: float) -> dict[str, Any]:
    """metrics.json of a training phase: dev metrics, cost and wall-clock, signature."""
    cost = phase_cost(model, stage_flops(model, assembly.example_batch()), trained, assembly.samples, epochs)
    return {"phase": name, "signature": assembly.signature(), "fingerprint": assembly.builder.fingerprint(),
            "depths": model.depths, "trained_stages": sorted(trained), "epochs": epochs,
            "dev": assembly.trainer.evaluate(model), "wall_clock_s": result.train_seconds, **cost,
            "history": result.history}


def _epochs(assembly: Assembly, phase: PhaseSection) -> float:
    return phase.apply(assembly.recipe.train).epochs


def _finish(run: RunDir, record: dict[str, Any], write: Callable[[], None] | None = None) -> None:
    """Save the phase's weights (``write``) and metrics on the main process, then let every process go on."""
    state = process_state()
    if state.is_main_process:
        if write is not None:
            write()
        dev = ", ".join(f"{key} {value:.4f}" for key, value in record.get("dev", {}).items())
        print(f"{record['phase']}: done ({dev})")
        shutil.rmtree(run.checkpoints, ignore_errors=True)  # finished: its weights are saved, nothing to resume
        run.finish(record, f"# assemble: {record['phase']}\n\nDev: {dev}\n")
    state.wait_for_everyone()


# --------------------------------------------------------------------------------------------- phases
def meta_phase(assembly: Assembly) -> None:
    """Pretrain the meta model into RUN/meta (skipped when complete)."""
    with phase_run(assembly, META) as run:
        if run is None:
            return
        meta, result = assembly.trainer.pretrain_meta(run)
        record = _phase_record(assembly, META, meta, result, set(range(assembly.builder.modules)),
                               _epochs(assembly, assembly.recipe.assemble.meta))
        _finish(run, record, lambda: save_stages(run / STAGES_FILE, meta_states(meta), record))


def _checked(assembly: Assembly, path: Path, what: str, hint: str) -> dict[int, dict]:
    """The stage tensors in ``path`` after checking they were trained for this assembly's signature."""
    if not path.is_file():
        raise UserError(f"{what} is missing ({path} does not exist); {hint}")
    states, info = load_stages(path)
    ours = json.loads(json.dumps(assembly.signature(), default=str))  # as it reads back from the file
    theirs = info.get("signature", {})
    if info.get("fingerprint") != assembly.builder.fingerprint() or theirs != ours:
        raise UserError(f"{what} in {path} was trained for another model or split ({_differences(theirs, ours)}); "
                        f"{hint}")
    return states


def _differences(theirs: dict[str, Any], ours: dict[str, Any]) -> str:
    """The settings in which two signatures differ, as 'key: theirs vs this run's'."""
    flat_theirs, flat_ours = dotted(theirs), dotted(ours)
    keys = [key for key in sorted(flat_theirs.keys() | flat_ours.keys()) if flat_theirs.get(key) != flat_ours.get(key)]
    return "; ".join(f"{key}: {flat_theirs.get(key)!r} there, {flat_ours.get(key)!r} here" for key in keys[:4])


def meta_file(assembly: Assembly) -> Path:
    """The meta model's stage file: ``assemble.meta_model`` (a meta phase folder or file) or RUN/meta."""
    given = assembly.recipe.assemble.meta_model
    if given:
        path = Path(given)
        return path / STAGES_FILE if path.is_dir() else path
    return assembly.phase_path(META) / STAGES_FILE


def incubate_phase(assembly: Assembly, index: int) -> None:
    """Incubate module ``index`` into RUN/incubate-<index> against the checked meta model."""
    name = f"incubate-{index}"
    if RunDir(assembly.phase_path(name)).is_complete():
        print(f"{name}: complete, skipping")
        return
    meta = _checked(assembly, meta_file(assembly), "the meta model", META_HINT)
    with phase_run(assembly, name) as run:
        if run is None:
            return
        hybrid, result = assembly.trainer.incubate(index, meta, run)
        record = _phase_record(assembly, name, hybrid, result, {index},
                               _epochs(assembly, assembly.recipe.assemble.incubate))
        _finish(run, record, lambda: save_stages(run / MODULE_FILE, {index: hybrid.stage_state(index)},
                                                 {**record, "module": index}))


def incubated_modules(assembly: Assembly) -> dict[int, dict]:
    """Every module's tensors, checked; UserError naming the missing (or foreign) ones before anything is built."""
    missing = [i for i in range(assembly.builder.modules)
               if not RunDir(assembly.phase_path(f"incubate-{i}")).is_complete()]
    if missing:
        names = ", ".join(str(i) for i in missing)
        raise UserError(f"module{'s' if len(missing) > 1 else ''} {names} of {assembly.builder.modules} "
                        f"{'have' if len(missing) > 1 else 'has'} not been incubated (no finished "
                        f"{assembly.phase_path(f'incubate-{missing[0]}')}); run `assemble incubate --module "
                        f"{missing[0]}`{' (and the others)' if len(missing) > 1 else ''} first")
    modules = {}
    for i in range(assembly.builder.modules):
        states = _checked(assembly, assembly.phase_path(f"incubate-{i}") / MODULE_FILE, f"module {i}",
                          f"incubate it again for this recipe (delete {assembly.phase_path(f'incubate-{i}')})")
        if set(states) != {i}:
            raise UserError(f"{assembly.phase_path(f'incubate-{i}') / MODULE_FILE} holds stage(s) {sorted(states)}, "
                            f"not module {i}; incubate module {i} again")
        modules[i] = states[i]
    return modules


def assemble_phase(assembly: Assembly) -> None:
    """Load every incubated module into the target (RUN/assemble), measured before finetuning."""
    if RunDir(assembly.phase_path(ASSEMBLED)).is_complete():
        print(f"{ASSEMBLED}: complete, skipping")
        return
    modules = incubated_modules(assembly)
    target = assembly.trainer.assemble(modules)  # strict loads: nothing is written unless every module fits
    with phase_run(assembly, ASSEMBLED) as run:
        if run is None:
            return
        record = {"phase": ASSEMBLED, "signature": assembly.signature(),
                  "fingerprint": assembly.builder.fingerprint(), "depths": target.depths,
                  "dev": assembly.trainer.evaluate(target)}
        _finish(run, record, lambda: save_stages(run / STAGES_FILE, meta_states(target), record))


def assembled_target(assembly: Assembly) -> StagedModel:
    """The assembled target from RUN/assemble, checked."""
    states = _checked(assembly, assembly.phase_path(ASSEMBLED) / STAGES_FILE, "the assembled model",
                      "run `assemble --phase assemble` first")
    return assembly.trainer.assemble(states)


def finetune_phase(assembly: Assembly) -> None:
    """Finetune the assembled target end to end into RUN/finetune (its model/ is the plain model)."""
    if RunDir(assembly.phase_path(FINETUNE)).is_complete():
        print(f"{FINETUNE}: complete, skipping")
        return
    target = assembled_target(assembly)
    with phase_run(assembly, FINETUNE) as run:
        if run is None:
            return
        result = assembly.trainer.finetune(target, run)
        record = _phase_record(assembly, FINETUNE, target, result, set(range(assembly.builder.modules)),
                               _epochs(assembly, assembly.recipe.assemble.finetune))
        _finish(run, record, lambda: save_model(assembly.builder.to_plain(target), run / "model",
                                                tokenizer=assembly.experiment.tokenizer))


def e2e_phase(assembly: Assembly, epochs: float) -> None:
    """The end-to-end baseline (a fresh target, ``epochs`` epochs) into RUN/e2e."""
    with phase_run(assembly, E2E) as run:
        if run is None:
            return
        target, result = assembly.trainer.train_e2e(epochs, run)
        _finish(run, _phase_record(assembly, E2E, target, result, set(range(assembly.builder.modules)), epochs))


def preflight(assembly: Assembly, phases: list[str], module: int | None = None) -> None:
    """Refuse, before anything is written, what the phases would need from earlier ones and cannot have:
    a missing or foreign meta model, missing or foreign modules, a module number out of range."""
    for phase in phases:
        if phase not in PHASES:
            raise UserError(f"unknown phase '{phase}'; pick one of {', '.join(PHASES)}")
    if module is not None and not 0 <= module < assembly.builder.modules:
        raise UserError(f"--module {module} does not exist; modules are numbered 0..{assembly.builder.modules - 1}")
    if phases == ["incubate"]:
        _checked(assembly, meta_file(assembly), "the meta model", META_HINT)
    elif phases == [ASSEMBLED]:
        incubated_modules(assembly)


def run_phases(assembly: Assembly, phases: list[str], module: int | None = None) -> None:
    """Run ``phases`` in order (each skipped when complete); ``module`` limits incubation to one module.

    Usage: ``run_phases(assembly, list(PHASES))``
    """
    preflight(assembly, phases, module)
    started = time.perf_counter()
    for phase in phases:
        if phase == META:
            meta_phase(assembly)
        elif phase == "incubate":
            for index in [module] if module is not None else range(assembly.builder.modules):
                incubate_phase(assembly, index)
        elif phase == ASSEMBLED:
            assemble_phase(assembly)
        else:
            finetune_phase(assembly)
    print(f"phases {', '.join(phases)} took {time.perf_counter() - started:.1f}s")


def phase_records(assembly: Assembly) -> dict[str, dict[str, Any]]:
    """The metrics.json of every finished phase, by phase name."""
    records = {}
    for path in sorted(assembly.root.iterdir()):
        if path.is_dir() and RunDir(path).is_complete():
            records[path.name] = json.loads((path / "metrics.json").read_text())
    return records


def copy_final_model(assembly: Assembly) -> Path:
    """RUN/model: the finetuned model, where ``shrink export RUN`` and ``shrink bench RUN`` look for it."""
    source = assembly.phase_path(FINETUNE) / "model"
    with atomic_dir(assembly.root / "model") as folder:
        shutil.copytree(source, folder, dirs_exist_ok=True)
    return assembly.root / "model"


def final_model(assembly: Assembly) -> Any:
    """The finetuned plain model. Usage: ``final_model(assembly)(pixels)``."""
    return load_model(assembly.phase_path(FINETUNE) / "model").eval()


def ours_cost(records: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The summed cost of meta, incubation and finetuning."""
    parts = [record for name, record in records.items() if name == META or name == FINETUNE
             or name.startswith("incubate-")]
    return add_costs(*({key: part[key] for key in ("block_epochs", "cost_units", "train_flops")} for part in parts))


__all__ = ["Assembly", "E2E", "assemble_phase", "e2e_phase", "finetune_phase", "incubate_phase",
           "incubated_modules", "meta_phase", "open_root", "preflight", "phase_records", "prepare_assembly",
           "run_phases"]
