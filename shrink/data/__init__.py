"""Datasets for every shrink command: GLUE folders, CSV/TSV/JSONL files, Hugging Face names, CIFAR,
MNIST-format idx files, image folders and generated sets, all returned as one :class:`TaskData`.

Usage::

    task = load_task_data("sst2", "glue/SST-2", max_train_samples=2000)
    loader = DataLoader(task.train, batch_size=32, collate_fn=make_collate(task, tokenizer))
    compute_metrics(task.metrics, logits, labels)
"""
# The loader modules register themselves in DATASETS when imported.
from shrink.data import (cifar, digits, glue, hf_hub, idx, image_folder, metadata_csv, rotated,  # noqa: F401
                         synthetic, synthetic_domains, tabular)
from shrink.data.collate import make_collate
from shrink.data.metrics import METRICS, compute_metrics
from shrink.data.task import DATASETS, LoadRequest, TaskData, load_task_data
from shrink.data.transforms import DATASET_STATS, Compose, Normalize, RandomCrop, RandomHorizontalFlip

__all__ = [
    "DATASETS", "DATASET_STATS", "METRICS", "Compose", "LoadRequest", "Normalize", "RandomCrop",
    "RandomHorizontalFlip", "TaskData", "compute_metrics", "load_task_data", "make_collate",
]
