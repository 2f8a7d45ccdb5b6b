"""Recommendations for a new dataset: meta-features, a regressor trained on past trials, ranked pipelines.

A trial table row is (task meta-features, pipeline parameters) -> retention. The regressor (scikit-learn's
random forest over one-hot parameters and numeric meta-features) learns from the shipped prior table
(``prior_trials.csv``, written by ``tools/bench_autodistill.py --write-prior`` from its grids of real runs),
from trial tables passed as ``auto.priors``, and from this study's finished trials; it ranks candidate
pipelines drawn from the search space, and the top k are enqueued as the study's first trials before TPE
takes over.

Usage::

    features = dataset_meta_features(plan)
    ranked = recommend(study, space, recipe.auto)   # best predicted first
"""
from __future__ import annotations

import csv
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import torch
from transformers import PreTrainedModel

from distill.auto.config import AutoSection
from distill.auto.space import RandomSuggester, SearchSpace, recipe_params, sample
from shrink.errors import UserError
from shrink.train import forward_logits

PRIOR_TABLE = "prior_trials.csv"
META_SAMPLE = 128  # training examples embedded by the teacher for the meta-features
TABLE_COLUMNS = ("task", "study", "number", "state", "retention", "student_score", "teacher_score", "latency",
                 "size", "wall_s", "params", "meta_features", "run_dir")


# ------------------------------------------------------------------------------------------ meta-features
@torch.no_grad()
def dataset_meta_features(plan: Any) -> dict[str, float]:
    """Size, label count, task type, mean length and a teacher-embedding summary of ``plan``'s task.

    The embedding summary is the teacher's mean-pooled last hidden states (logits for non-HF teachers) on up
    to 128 training examples: their spread (mean cosine distance to the centroid) and class separation
    (distance between class centroids over the mean distance to one's own centroid).
    Usage: ``dataset_meta_features(plan_distillation(recipe))["log_train_size"]``
    """
    task = plan.task
    model = plan.members[plan.recipe.distill.feature_teacher].model.eval()
    count = min(META_SAMPLE, len(task.train))
    batch = plan.teacher_collate([task.train[i] for i in range(count)])
    mask = batch.get("attention_mask")
    if isinstance(model, PreTrainedModel):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1]
        weights = mask.unsqueeze(-1).float() if mask is not None else torch.ones_like(hidden[..., :1])
        embeddings = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1)
    else:
        embeddings = forward_logits(model, batch)
    labels = batch["labels"]
    return {
        "log_train_size": math.log(len(task.train)),
        "num_labels": float(1 if task.is_regression else task.num_labels),
        "regression": float(task.is_regression),
        "mean_tokens": float(mask.float().sum(1).mean()) if mask is not None else 0.0,
        "embedding_spread": _spread(embeddings),
        "class_separation": 0.0 if task.is_regression else _separation(embeddings, labels),
    }


def _spread(embeddings: torch.Tensor) -> float:
    centroid = embeddings.mean(0, keepdim=True)
    return float(1 - torch.nn.functional.cosine_similarity(embeddings, centroid).mean())


def _separation(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    classes = [embeddings[labels == c] for c in labels.unique()]
    if len(classes) < 2:
        return 0.0
    centroids = torch.stack([group.mean(0) for group in classes])
    within = torch.cat([(group - group.mean(0)).norm(dim=1) for group in classes]).mean()
    between = torch.pdist(centroids).mean()
    return float(between / within.clamp_min(1e-8))


# ------------------------------------------------------------------------------------------ trial tables
def read_trial_table(path: str | Path | Any) -> list[dict[str, Any]]:
    """Rows of a trial table CSV (``trials.csv`` of a study, or the shipped prior), JSON columns parsed.

    Usage: ``rows = read_trial_table("runs/auto-demo/trials.csv")``
    """
    try:
        text = path.read_text(encoding="utf-8") if hasattr(path, "read_text") else Path(path).read_text("utf-8")
    except OSError as err:
        raise UserError(f"cannot read trial table {path}: {err.strerror}; pass a trials.csv written by "
                        "distill --auto") from None
    rows = list(csv.DictReader(text.splitlines()))
    if rows and not {"params", "meta_features", "retention"} <= set(rows[0]):
        raise UserError(f"{path} is not a trial table (needs params, meta_features and retention columns)")
    for row in rows:
        row["params"] = json.loads(row["params"] or "{}")
        row["meta_features"] = json.loads(row["meta_features"] or "{}")
        row["retention"] = float(row["retention"]) if row["retention"] not in ("", None) else None
    return rows


def shipped_prior() -> list[dict[str, Any]]:
    """The prior trial table shipped with the package. Usage: ``len(shipped_prior())``."""
    table = resources.files("distill.auto") / PRIOR_TABLE
    return read_trial_table(table) if table.is_file() else []


def study_rows(study: Any) -> list[dict[str, Any]]:
    """This study's finished trials as trial-table rows. Usage: ``study_rows(study)[0]["retention"]``."""
    from distill.auto.outputs import trial_rows

    return trial_rows(study)


def training_rows(study: Any, auto: AutoSection) -> list[dict[str, Any]]:
    """Rows with a retention to learn from: the shipped prior, ``auto.priors`` and this study's trials."""
    rows = shipped_prior() if auto.use_shipped_prior else []
    for path in auto.priors:
        rows += read_trial_table(path)
    rows += study_rows(study)
    return [row for row in rows if row["retention"] is not None and row["meta_features"]]


# ------------------------------------------------------------------------------------------ regressor
def encode(params: dict[str, Any], meta: dict[str, float]) -> dict[str, Any]:
    """One row's regressor features: parameters (layer-map groups merged, text one-hot) and meta-features.

    Usage: ``encode({"kd_loss": "kl"}, {"num_labels": 2.0})``
    """
    features: dict[str, Any] = {f"meta:{k}": float(v) for k, v in meta.items()}
    for name, value in params.items():
        key = name.split("/")[0]
        features[key] = float(value) if isinstance(value, (bool, int, float)) else str(value)
    return features


class RetentionModel:
    """A random-forest regressor of retention from (meta-features, pipeline).

    Usage: ``RetentionModel().fit(rows).predict([params], meta)``
    """

    def __init__(self, seed: int = 0) -> None:
        from sklearn.ensemble import RandomForestRegressor
        from sklearn.feature_extraction import DictVectorizer

        self.vectorizer = DictVectorizer(sparse=False)
        self.forest = RandomForestRegressor(n_estimators=300, random_state=seed)

    def fit(self, rows: Iterable[dict[str, Any]]) -> "RetentionModel":
        rows = list(rows)
        x = self.vectorizer.fit_transform([encode(row["params"], row["meta_features"]) for row in rows])
        self.forest.fit(x, [row["retention"] for row in rows])
        return self

    def predict(self, candidates: list[dict[str, Any]], meta: dict[str, float]) -> list[float]:
        x = self.vectorizer.transform([encode(params, meta) for params in candidates])
        return [float(v) for v in self.forest.predict(x)]


def candidates(space: SearchSpace, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """The recipe's own pipeline and up to ``count`` distinct random ones from the space."""
    pool = [params for params in [recipe_params(space)] if params is not None]
    seen = {json.dumps(p, sort_keys=True) for p in pool}
    for index in range(count * 4):
        params = sample(space, RandomSuggester(seed + index))
        key = json.dumps(params, sort_keys=True)
        if key not in seen:
            seen.add(key)
            pool.append(params)
        if len(pool) >= count:
            break
    return pool


def rank(rows: list[dict[str, Any]], pool: list[dict[str, Any]], meta: dict[str, float],
         seed: int = 0) -> list[tuple[float, dict[str, Any]]]:
    """(predicted retention, params) for each candidate, best first. Usage: ``rank(rows, pool, meta)[0]``."""
    if not rows:
        raise UserError("--recommend has no trials to learn from: no prior table, no auto.priors and no finished "
                        "trials in this study; pass a trials.csv in auto.priors or run without --recommend")
    predictions = RetentionModel(seed).fit(rows).predict(pool, meta)
    return sorted(zip(predictions, pool), key=lambda pair: -pair[0])


def recommend(study: Any, space: SearchSpace, auto: AutoSection) -> list[dict[str, Any]]:
    """The space's candidates ranked by predicted retention on this study's task, best first.

    Usage: ``study_queue = recommend(study, space, recipe.auto)[:3]``
    """
    meta = study.user_attrs["meta_features"]
    ranked = rank(training_rows(study, auto), candidates(space, auto.candidates, auto.seed or 0), meta, auto.seed or 0)
    return [params for _, params in ranked]


__all__ = [
    "META_SAMPLE",
    "PRIOR_TABLE",
    "RetentionModel",
    "TABLE_COLUMNS",
    "candidates",
    "dataset_meta_features",
    "encode",
    "rank",
    "read_trial_table",
    "recommend",
    "shipped_prior",
    "study_rows",
    "training_rows",
]
