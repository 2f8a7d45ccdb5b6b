"""Batch collation: examples -> model-ready tensors, for text (tokenised) and image tasks.

Usage::

    loader = DataLoader(task.train, batch_size=32, collate_fn=make_collate(task, tokenizer, max_length=128))
    next(iter(loader)).keys()  # input_ids, attention_mask, token_type_ids, labels
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from shrink.data.task import TaskData
from shrink.errors import UserError

Batch = dict[str, torch.Tensor]


class TextCollator:
    """Tokenise text (and text pairs), padding to the longest example and truncating at ``max_length``.

    A class rather than a closure so DataLoader workers can pickle it. Usage: ``TextCollator(tok, 128, False)``
    """

    def __init__(self, tokenizer: Any, max_length: int, is_regression: bool) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length
        self.label_dtype = torch.float32 if is_regression else torch.long

    def __call__(self, examples: list[dict[str, Any]]) -> Batch:
        pairs = [example["text_pair"] for example in examples]
        encoded = self.tokenizer(
            [example["text"] for example in examples], pairs if pairs[0] is not None else None,
            padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt",
        )
        batch = dict(encoded)
        batch["labels"] = torch.tensor([example["label"] for example in examples], dtype=self.label_dtype)
        return batch


def collate_images(examples: list[dict[str, Any]]) -> Batch:
    """Stack ``pixel_values`` into ``(B, C, H, W)`` with long ``labels``. Usage: ``collate_images(examples)``."""
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([example["label"] for example in examples], dtype=torch.long),
    }


def make_collate(task: TaskData, tokenizer: Any = None, max_length: int = 128) -> Callable[[list], Batch]:
    """The collate function for ``task``; text tasks use ``tokenizer`` or else the task's own.

    Usage: ``make_collate(task, AutoTokenizer.from_pretrained(model_dir), max_length=64)``
    """
    if task.modality == "image":
        return collate_images
    tokenizer = tokenizer if tokenizer is not None else task.tokenizer
    if tokenizer is None:
        raise UserError(f"text task {task.name} needs a tokenizer: use a Hugging Face model (its tokenizer "
                        "comes with it) or pass the tokenizer's directory")
    return TextCollator(tokenizer, max_length, task.is_regression)
