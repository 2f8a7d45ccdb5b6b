"""Generated datasets for demos and tests: learnable, small, and the same for the same seed.

``synthetic-text``: binary sentiment sentences whose label is the majority of their sentiment words,
with a word-level ``BertTokenizerFast`` of exactly its vocabulary. ``synthetic-image``: ten classes
of striped images (one stripe angle per class) plus noise; the default shape is ``3x32x32`` and the
name's spec picks another (``synthetic-image:1x16x16``). ``max_train_samples`` / ``max_eval_samples``
set how many examples are generated. Usage::

    task = load_task_data("synthetic-text", max_train_samples=500, seed=1)
    task.tokenizer("good movie")["input_ids"]
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from shrink.data.images import Split, image_task, parse_dims
from shrink.data.task import DATASETS, LoadRequest, TaskData, takes_spec
from shrink.data.text import TextDataset

if TYPE_CHECKING:
    from transformers import BertTokenizerFast

TRAIN_SIZE, EVAL_SIZE = 2000, 500
POSITIVE = ("good", "great", "excellent", "wonderful", "amazing", "delightful", "brilliant", "superb",
            "charming", "lovely", "enjoyable", "moving", "clever", "fresh", "beautiful", "fun")
NEGATIVE = ("bad", "awful", "terrible", "boring", "dull", "dreadful", "poor", "mediocre",
            "tedious", "horrible", "clumsy", "bland", "weak", "stale", "ugly", "annoying")
FILLER = ("the", "a", "movie", "film", "plot", "story", "acting", "actors", "script", "scenes", "director",
          "was", "is", "and", "but", "with", "of", "really", "quite", "very", "its", "this", "ending", "music",
          "characters", "cast", "pace", "dialogue", "overall", "felt", "seemed", "somewhat", "at", "times")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
IMAGE_CLASSES = 10


def _rng(seed: int, split: int) -> np.random.Generator:
    return np.random.default_rng([seed, split])


def _sentence(rng: np.random.Generator, label: int) -> str:
    """Filler plus k words of the label's sentiment and fewer (< k) of the other, shuffled."""
    own, other = (POSITIVE, NEGATIVE) if label == 1 else (NEGATIVE, POSITIVE)
    agree = int(rng.integers(1, 4))
    words = [*rng.choice(own, agree), *rng.choice(other, int(rng.integers(0, agree))),
             *rng.choice(FILLER, int(rng.integers(3, 9)))]
    rng.shuffle(words)
    return " ".join(words)


def synthetic_sentences(size: int, seed: int, split: int = 0) -> TextDataset:
    """``size`` labelled sentences drawn from ``(seed, split)``. Usage: ``synthetic_sentences(100, seed=0)``."""
    rng = _rng(seed, split)
    labels = rng.integers(0, 2, size).tolist()
    return TextDataset([_sentence(rng, label) for label in labels], None, labels)


def synthetic_tokenizer() -> "BertTokenizerFast":
    """A lower-casing word-level BERT tokenizer whose vocabulary is the special tokens plus every word used.

    Usage: ``synthetic_tokenizer().save_pretrained("out/model")``
    """
    from transformers import BertTokenizerFast  # imported here: vision-only use should not pay for it

    words = SPECIAL_TOKENS + tuple(sorted({*POSITIVE, *NEGATIVE, *FILLER}))
    return BertTokenizerFast(vocab={word: index for index, word in enumerate(words)}, model_max_length=128)


@DATASETS.register("synthetic-text", aliases=("synthetic-sentiment",),
                   summary="generated two-class sentiment sentences; offline, for demos and tests")
def load_synthetic_text(request: LoadRequest) -> TaskData:
    """Generate the synthetic sentiment task. Usage: ``load_task_data("synthetic-text", seed=1)``."""
    evaluation = request.max_eval_samples or EVAL_SIZE
    return TaskData(
        name=request.name, modality="text",
        train=synthetic_sentences(request.max_train_samples or TRAIN_SIZE, request.seed, 0),
        dev=synthetic_sentences(evaluation, request.seed, 1),
        test=synthetic_sentences(evaluation, request.seed, 2),
        num_labels=2, is_regression=False, metrics=("accuracy", "f1"), label_names=["negative", "positive"],
        tokenizer=synthetic_tokenizer(),
    )


def synthetic_images(size: int, shape: tuple[int, ...], seed: int, split: int = 0) -> Split:
    """``size`` uint8 images: class k shows stripes at k * 18 degrees with random contrast and pixel noise.

    Usage: ``images, labels = synthetic_images(100, (1, 16, 16), seed=0)``
    """
    rng = _rng(seed, split)
    channels, height, width = shape
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    angles = np.pi * np.arange(IMAGE_CLASSES) / IMAGE_CLASSES
    period = max(4.0, min(height, width) / 4)
    # The stripe templates are fixed, so every seed draws from the same classes.
    templates = 0.5 + 0.5 * np.sin(2 * math.pi * (np.cos(angles)[:, None, None] * cols
                                                  + np.sin(angles)[:, None, None] * rows) / period)
    labels = rng.integers(0, IMAGE_CLASSES, size)
    gains = rng.uniform(0.6, 1.0, (size, channels, 1, 1))
    pixels = gains * templates[labels][:, None] + rng.normal(0.0, 0.15, (size, channels, height, width))
    images = np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


@DATASETS.register("synthetic-image", aliases=("synthetic-images", "synthetic-vision"),
                   summary="generated stripe images, synthetic-image[:CxHxW]; offline, for demos and tests")
@takes_spec
def load_synthetic_image(request: LoadRequest) -> TaskData:
    """Generate the synthetic stripes task. Usage: ``load_task_data("synthetic-image:1x16x16")``."""
    shape = parse_dims(request.spec, 3, "synthetic-image", "1x16x16") or (3, 32, 32)
    evaluation = request.max_eval_samples or EVAL_SIZE
    return image_task(
        request.full_name,
        synthetic_images(request.max_train_samples or TRAIN_SIZE, shape, request.seed, 0),
        synthetic_images(evaluation, shape, request.seed, 1),
        synthetic_images(evaluation, shape, request.seed, 2),
        [f"stripes-{round(180 * k / IMAGE_CLASSES)}deg" for k in range(IMAGE_CLASSES)], None, request.augment,
        flip=False,  # a mirror turns stripes at angle a into 180 - a: another class
    )
