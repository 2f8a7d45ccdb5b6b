"""AutoDistiller (``distill --auto``): an Optuna search over Distiller pipelines (spec §4).

``space`` builds the search space from the registries, ``study`` runs the trials (storage, workers,
pruner, warm starts), ``recommend`` ranks pipelines for a new dataset from past trials, ``outputs`` writes
the trial table, the best recipe, plots, metrics.json and report.md.

Usage::

    from distill.auto import AutoDistillRecipe, run_auto
    result = run_auto(load_recipe("demo", AutoDistillRecipe, {"auto.trials": 8}))
"""
from distill.auto.config import AutoDistillRecipe, AutoSection
from distill.auto.study import OBJECTIVES, AutoResult, run_auto

__all__ = ["OBJECTIVES", "AutoDistillRecipe", "AutoResult", "AutoSection", "run_auto"]
