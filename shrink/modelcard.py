"""The model card (README.md in Hugging Face's format) written into a run's saved model folder.

The front matter is built by ``huggingface_hub.ModelCardData`` (base model, datasets, tags and a
``model-index`` of the dev metrics), so the Hub and its tools read it; the body says how the model was
made and how to load it.

Usage::

    write_model_card(run / "model", ModelCard(method="Distilled from bert-base with KD",
                     base_model="bert-base-uncased", dataset="sst2", metrics={"accuracy": 0.91}, tags=["distillation"]))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

from shrink.models.io import saved_kind
from shrink.runs import atomic_write_text

CARD_FILE = "README.md"
HF_LOADING = """```python
from transformers import pipeline

classify = pipeline("{pipeline}", model="{path}")
```"""
TORCH_LOADING = """```python
from shrink.models.io import load_model

model = load_model("{path}").eval()  # safetensors + architecture.json, never unpickled
```"""


@dataclass
class ModelCard:
    """What a card says: how the model was made (one sentence), from what, on which data, with what scores.

    Usage: ``ModelCard(method="Trained with shrink train", base_model=None, dataset="sst2", metrics={})``
    """

    method: str
    base_model: str | None
    dataset: str
    metrics: dict[str, float]
    tags: list[str] = field(default_factory=list)


def render_model_card(folder: Path, card: ModelCard) -> str:
    """The card's text for the model saved in ``folder``. Usage: ``render_model_card(run / "model", card)``."""
    hf = saved_kind(folder) == "hf"
    pipeline = "text-classification" if hf else "image-classification"
    name = folder.parent.name or folder.name
    data = ModelCardData(
        model_name=name, base_model=card.base_model, datasets=[card.dataset],
        library_name="transformers" if hf else "shrink", pipeline_tag=pipeline, tags=["shrink", *card.tags],
        eval_results=[EvalResult(task_type=pipeline, dataset_type=card.dataset, dataset_name=card.dataset,
                                 metric_type=metric, metric_value=value, dataset_split="validation")
                      for metric, value in card.metrics.items()] or None,
    )
    scores = "\n".join(f"| {metric} | {value:.4f} |" for metric, value in card.metrics.items())
    loading = (HF_LOADING if hf else TORCH_LOADING).format(pipeline=pipeline, path=folder)
    return (f"---\n{data.to_yaml()}\n---\n\n# {name}\n\n{card.method}, on `{card.dataset}`.\n\n"
            f"## Dev results\n\n| metric | value |\n|---|---|\n{scores}\n\n## How to load\n\n{loading}\n\n"
            "## How it was made\n\nThe run's resolved recipe is `../recipe.yaml` and its figures, with the library "
            "versions and hardware, are in `../metrics.json`; the same command with that recipe as `--recipe` "
            "makes it again.\n")


def write_model_card(folder: Path, card: ModelCard) -> Path:
    """Write ``folder/README.md`` atomically. Usage: ``write_model_card(run / "model", card)``."""
    target = folder / CARD_FILE
    atomic_write_text(target, render_model_card(folder, card))
    return target
