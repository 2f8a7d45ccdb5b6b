"""distill --auto (AutoDistiller) at toy sizes: only valid pipelines are drawn, warm starts run first, the
pruner stops a poor first epoch, the best recipe reruns to the same score, the recommender ranks a known
best pipeline first, a stale trial is failed by heartbeat and re-queued, bad input is refused in one line;
with SHRINK_TEST_POSTGRES_URL set (.ci/run starts a server), two worker processes share one PostgreSQL
study and a worker SIGKILLed mid-trial has its trial retried by another."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from distill.auto import AutoDistillRecipe, run_auto
from distill.auto.recommend import RetentionModel, rank
from distill.auto.space import apply_params, build_space, is_valid, mi_losses, recipe_params
from distill.auto.study import TrialBudget, TrialObjective, make_pruner, open_storage, open_study, warm_starts
from distill.cli import main
from distill.config import DistillRecipe
from distill.objectives import EMD_LOSSES
from distill.run import distill
from shrink.errors import UserError
from shrink.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
# The demo recipe shrunk: a 2-layer teacher fine-tuned for one epoch, a small space of cheap pipelines
# (without augmentation, whose augmenters may need models this offline machine lacks).
NO_AUGMENT = ", augment_policy: [none], mixup: [false]"
TINY = ["--recipe", "demo", "--teacher", "bert-tiny", "--max-train-samples", "48", "--max-eval-samples", "24",
        "--batch-size", "16", "--epochs", "2", "--teacher-epochs", "1", "--max-length", "16", "--no-progress",
        "--set", "auto.space={intermediate: [none, pkd, mi], kd_loss: [kl, mse], hard_weight: [0.0], alpha: [0.9], "
        f"critic: [mlp], layer_map: [skip]{NO_AUGMENT}}}"]
POSTGRES = os.environ.get("SHRINK_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(not POSTGRES, reason="SHRINK_TEST_POSTGRES_URL is not set (.ci/run starts a "
                                    "throwaway PostgreSQL server: source tools/test_postgres.sh; start_test_postgres)")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def demo_space(**narrow):
    return build_space(load_recipe("demo", DistillRecipe), regression=False, overrides=narrow)


def auto_recipe(out, *extra):
    from distill.cli import auto_recipe_from_args, build_parser

    return auto_recipe_from_args(build_parser().parse_args(["--auto", *TINY, "--out", str(out), *extra]))


# ------------------------------------------------------------------------------------------------ space
def test_only_valid_combinations_are_sampled():
    space = demo_space()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(multivariate=True, group=True, seed=0,
                                                                   n_startup_trials=10), direction="maximize")
    seen = set()

    def objective(trial):
        from distill.auto.space import sample

        params = sample(space, trial)
        assert is_valid(space, params)
        loss = params["intermediate"]
        assert ("alpha" in params) == (loss == "mi") and ("critic" in params) == (loss in mi_losses())
        assert ("temperature" in params) == (params["kd_loss"] == "kl")
        maps = [v for k, v in params.items() if k.startswith("layer_map/")]
        assert len(maps) == (loss != "none") and ("emd" not in maps or loss in EMD_LOSSES)
        recipe = apply_params(space, params, "unused")  # builds a valid recipe
        assert [entry.loss for entry in recipe.distill.intermediate] == ([] if loss == "none" else [loss])
        seen.add(loss)
        return params["lr"]

    study.optimize(objective, n_trials=60)
    assert len(seen) >= 5  # the space is really explored, not one corner of it


def test_recipe_narrows_the_space_and_drops_losses_left_without_a_layer_map():
    space = demo_space(layer_map=["emd"], kd_loss=["kl"], lr={"low": 1e-4, "high": 1e-3})
    dims = {dim.name: dim for dim in space.dimensions}
    assert set(dims["intermediate"].choices) == {"none", *EMD_LOSSES}  # cos, pkd, attention_mse have no emd
    assert dims["kd_loss"].choices == ("kl",) and (dims["lr"].low, dims["lr"].high) == (1e-4, 1e-3)


def test_augmentation_dimensions_come_from_the_augmenter_registry():
    from distill.auto.space import augmentation_dimensions

    policy, aug_p, mixup = augmentation_dimensions(["mlm", "swap", "delete"])
    assert len(policy.choices) == 16 and "none" in policy.choices and "swap>mlm>delete" in policy.choices
    assert aug_p.parent == "augment_policy" and "none" not in aug_p.parent_values and mixup.choices == (False, True)
    assert {"augment_policy", "aug_p", "mixup"} <= set(demo_space().names())  # derived from the registry


# ------------------------------------------------------------------------------------------------ study
def test_enqueued_warm_starts_run_first():
    space = demo_space()
    study = optuna.create_study(direction="maximize")
    picked = [{"kd_loss": "mse", "hard_weight": 0.5, "intermediate": "none", "lr": 2e-4, "epochs": 3},
              {"kd_loss": "ce", "hard_weight": 0.0, "intermediate": "cos", "layer_map/last+skip+tinybert": "last",
               "inter_weight": 0.5, "lr": 1e-3, "epochs": 4}]
    queued = warm_starts(study, space, picked)
    assert queued[-1] == recipe_params(space) and queued[-1]["intermediate"] == "mi"  # the recipe's own pipeline
    # what a recommendation does not name (augmentation here) is the recipe's own, not drawn at random
    assert queued[0]["augment_policy"] == queued[-1]["augment_policy"] and "temperature" not in queued[0]
    from distill.auto.space import sample

    study.optimize(lambda trial: len(sample(space, trial)), n_trials=5)
    assert [trial.params for trial in study.trials[:3]] == queued


def test_pruner_stops_a_trial_with_a_poor_first_epoch():
    space = demo_space()
    study = optuna.create_study(direction="maximize", pruner=make_pruner("halving", space))
    for score in (0.80, 0.82, 0.85, 0.9):
        study.add_trial(optuna.trial.create_trial(value=score, intermediate_values={1: score - 0.05, 2: score}))
    reporter = TrialObjective(space, Path("unused"), ["score"], "accuracy")._reporter
    good, poor = study.ask(), study.ask()
    reporter(good)({"epoch": 1, "accuracy": 0.9})  # keeps going
    with pytest.raises(optuna.TrialPruned, match="after epoch 1"):
        reporter(poor)({"epoch": 1, "accuracy": 0.3})


def test_a_spent_timeout_stops_a_running_trial_at_its_next_epoch_but_keeps_a_finished_one():
    study = optuna.create_study(direction="maximize")
    spent = TrialObjective(demo_space(), Path("unused"), ["score"], "accuracy", deadline=time.monotonic() - 1)
    with pytest.raises(optuna.TrialPruned, match="--timeout is spent"):
        spent._reporter(study.ask())({"epoch": 1, "accuracy": 0.9, "last": False})
    spent._reporter(study.ask())({"epoch": 2, "accuracy": 0.9, "last": True})  # its last epoch: the result counts


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    return run_auto(auto_recipe(tmp_path_factory.mktemp("auto") / "study", "--trials", "3"))


def test_search_runs_trials_as_run_directories_and_writes_outputs(tiny_study):
    folder, study = tiny_study.folder, tiny_study.study
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trials) == 3 and trials[0].params == recipe_params(tiny_study.space)  # the default warm start
    for trial in trials:
        assert Path(trial.user_attrs["run_dir"]).parent == folder / "trials"
        assert (Path(trial.user_attrs["run_dir"]) / "recipe.yaml").is_file()
        assert sorted(trial.intermediate_values) == list(range(1, len(trial.intermediate_values) + 1))  # per epoch
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert all(t.value == pytest.approx(t.user_attrs["student_score"] / t.user_attrs["teacher_score"]) for t in done)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["trials"]["complete"] + metrics["trials"]["pruned"] == 3 and metrics["best"]["retention"]
    assert (folder / "optimization_history.png").read_bytes()[:4] == b"\x89PNG"
    assert "trials.csv" in os.listdir(folder) and "Rerun the best pipeline" in (folder / "report.md").read_text()
    assert (folder / "teacher" / "model").is_dir()  # fine-tuned once, shared by every trial


def test_best_recipe_reruns_to_the_same_score(tiny_study):
    best = tiny_study.study.best_trial
    rerun = distill(load_recipe(str(tiny_study.folder / "best_recipe.yaml"), DistillRecipe))
    assert rerun.metrics["retention"] == pytest.approx(best.value, abs=1e-9)


def test_resume_continues_a_finished_study_and_refuses_to_restart_it(tiny_study, capsys):
    out = str(tiny_study.folder)
    with pytest.raises(SystemExit) as exit_info:
        main(["--auto", *TINY, "--out", out, "--trials", "3"])
    assert exit_info.value.code == 2 and "pass --resume" in capsys.readouterr().err
    result = run_auto(auto_recipe(out, "--trials", "4"), resume=True)
    assert len(result.study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 4


def test_score_and_latency_give_a_pareto_front(tmp_path):
    result = run_auto(auto_recipe(tmp_path / "pareto", "--trials", "1", "--objectives", "score,latency",
                                  "--set", "auto.space.intermediate=[none]"))
    trials = result.study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 1 and all(t.values[1] > 0 and t.user_attrs["latency"] == t.values[1] for t in trials)
    metrics = json.loads((result.folder / "metrics.json").read_text())
    assert metrics["pareto"] and (result.folder / "pareto_front.png").is_file()
    assert all((Path(t.user_attrs["run_dir"]) / "model.onnx").is_file() for t in trials)


# ------------------------------------------------------------------------------------------------ recommend
def test_recommender_ranks_a_known_best_pipeline_first():
    import random

    rng = random.Random(0)
    pipelines = [{"kd_loss": kd, "intermediate": loss} for kd in ("ce", "kl", "mse") for loss in ("none", "cos", "mi")]
    best = {"kd_loss": "kl", "intermediate": "mi"}
    rows = []
    for task in range(4):
        meta = {"log_train_size": 6 + task, "num_labels": 2.0}
        for params in pipelines:
            retention = (0.95 if params == best else 0.75) + rng.uniform(-0.03, 0.03)
            rows.append({"params": params, "meta_features": meta, "retention": retention})
    ranked = rank(rows, pipelines, {"log_train_size": 7.5, "num_labels": 2.0})
    assert ranked[0][1] == best and ranked[0][0] > ranked[1][0] + 0.05
    assert isinstance(RetentionModel().fit(rows).predict([best], {"num_labels": 2.0})[0], float)


def test_recommend_without_data_is_refused():
    with pytest.raises(UserError, match="no trials to learn from"):
        rank([], [{"kd_loss": "kl"}], {})


def test_recommend_enqueues_the_top_ranked_pipelines_first(tiny_study, tmp_path):
    from distill.auto.recommend import candidates, read_trial_table

    prior = str(tiny_study.folder / "trials.csv")
    result = run_auto(auto_recipe(tmp_path / "rec", "--trials", "2", "--recommend", "--top-k", "2", "--prior", prior,
                                  "--set", "auto.use_shipped_prior=false"))
    study = result.study
    expected = rank([r for r in read_trial_table(prior) if r["retention"] is not None],
                    candidates(result.space, 256), study.user_attrs["meta_features"])
    assert [t.params for t in study.trials[:2]] == [params for _, params in expected[:2]]


# ------------------------------------------------------------------------------------------------ workers
def start_worker(out, storage, study, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "distill", "--auto", *TINY, "--out", str(out), "--storage",
                             storage, "--study-name", study, *extra], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@needs_postgres
def test_two_postgres_workers_record_every_trial_once(tmp_path):
    storage, name = POSTGRES, f"two-{uuid.uuid4().hex[:8]}"
    one_epoch = ["--epochs", "1", "--set", "auto.space.epochs=[1]"]
    workers = [start_worker(tmp_path / "study", storage, name, "--trials", "4", *one_epoch) for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read()
    study = optuna.load_study(study_name=name, storage=storage)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert 4 <= len(finished) <= 5  # the budget is a count: two workers finishing together may both go on
    assert len({t.number for t in study.trials}) == len(study.trials) and not study.get_trials(
        states=(TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL))
    run_dirs = [Path(t.user_attrs["run_dir"]) for t in finished]
    assert len(set(run_dirs)) == len(run_dirs) and len({t.user_attrs["worker"] for t in finished}) == 2
    assert all((Path(t.user_attrs["run_dir"]) / ("metrics.json" if t.state == TrialState.COMPLETE else "recipe.yaml"))
               .is_file() for t in finished)


def test_another_workers_running_trial_holds_a_budget_slot_until_its_heartbeat_goes_stale(tmp_path):
    from distill.auto.space import sample

    auto = AutoDistillRecipe().auto.model_copy(update={"heartbeat_s": 1})
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", auto)
    space = demo_space()
    study = open_study(auto, storage, "s", space, ["maximize"])
    done = study.ask()
    sample(space, done)
    study.tell(done, 1.0)
    alive = study.ask()  # another worker's trial, heartbeat fresh
    params = sample(space, alive)
    storage.record_heartbeat(alive._trial_id)
    budget = TrialBudget(3, storage)
    objective = lambda trial: len(sample(space, trial)) / 100  # noqa: E731
    study.optimize(objective, n_trials=3, callbacks=[budget])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING, TrialState.COMPLETE]
    time.sleep(5)  # that worker died: more than 3 missed heartbeats (the storage keeps whole seconds)
    assert budget.spent(study) == 2  # its trial failed by heartbeat and no longer counts; the retry will
    study.optimize(objective, n_trials=3, callbacks=[budget])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert study.trials[3].params == params and budget.spent(study) == 3


@needs_postgres
def test_a_postgres_worker_killed_mid_trial_is_retried_by_another(tmp_path):
    storage, name = POSTGRES, f"kill-{uuid.uuid4().hex[:8]}"
    # 4x the tiny training set: trials of several seconds, so the poll can find one running and kill it
    beat = ["--set", "auto.heartbeat_s=1", "--epochs", "3", "--set", "auto.space.epochs=[3]",
            "--max-train-samples", "192"]
    victim = start_worker(tmp_path / "victim", storage, name, "--trials", "2", *beat)
    polling = optuna.storages.RDBStorage(storage)  # one pool: a new storage per poll exhausted the server
    deadline = time.time() + 240
    def states():
        with _quiet_storage(polling, name) as study:
            return [t.state for t in study.trials] if study else []

    while time.time() < deadline:  # kill it mid-trial, after one trial has completed
        time.sleep(0.2)
        if states().count(TrialState.COMPLETE) >= 1 and TrialState.RUNNING in states():
            time.sleep(1)  # its heartbeat thread has written; a trial of a few seconds may have ended since:
            if TrialState.RUNNING in states():  # look again, so the kill lands mid-trial
                break
    assert TrialState.RUNNING in states(), "the victim never stayed inside a trial long enough to be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    completed_before = {t.number: t.value for t in optuna.load_study(study_name=name, storage=storage).trials
                        if t.state == TrialState.COMPLETE}
    # The rescuer's start-up (imports, teacher) outlasts the grace period (3 heartbeats): the trial is stale.
    rescuer = start_worker(tmp_path / "rescuer", storage, name, "--trials", "2", *beat)
    assert rescuer.wait(timeout=300) == 0, rescuer.stderr.read()
    study = optuna.load_study(study_name=name, storage=storage)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and not study.get_trials(states=(TrialState.RUNNING,))
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retried) == 1 and retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retried[0].params == failed[0].params
    assert {t.number: t.value for t in study.trials if t.number in completed_before} == completed_before


class _quiet_storage:
    """The study, or None while the first worker has not created it yet."""

    def __init__(self, storage, name):
        self.storage, self.name = storage, name

    def __enter__(self):
        try:
            return optuna.load_study(study_name=self.name, storage=self.storage)
        except Exception:
            return None

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("extra, message", [
    (["--objectives", "score,speed"], "unknown objective 'speed'"),
    (["--set", "auto.space.depth=[2]"], "unknown search dimension 'depth'"),
    (["--set", "auto.space.kd_loss=[]"], "auto.space.kd_loss is empty"),
    (["--set", "auto.space.layer_map=[tinybert_attention]", "--set", "auto.space.intermediate=[cos]"],
     "search space is empty after narrowing"),
    (["--storage", "postgresql://shrink:secret@127.0.0.1:1/none"], "cannot open the study storage postgresql://"),
    (["--resume"], "cannot resume"),
    (["--recommend", "--set", "auto.use_shipped_prior=false"], "no trials to learn from"),
])
def test_bad_input_is_one_line_and_exit_2(extra, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--auto", *TINY, "--out", str(tmp_path / "s"), *extra])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert "secret" not in err


def test_joining_a_study_with_another_space_or_direction_is_refused(tmp_path):
    auto = AutoDistillRecipe().auto
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", auto)
    open_study(auto, storage, "s", demo_space(), ["maximize"])
    with pytest.raises(UserError, match="another search space"):
        open_study(auto, storage, "s", demo_space(kd_loss=["kl"]), ["maximize"])
    with pytest.raises(UserError, match="exists with directions"):
        open_study(auto, storage, "s", demo_space(), ["maximize", "minimize"])


def test_search_flags_without_auto_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--recipe", "demo", "--trials", "3", "--recommend"])
    assert exit_info.value.code == 2 and "--trials, --recommend belong to the pipeline search" in capsys.readouterr().err
