"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): a real dataset that needs no files.

The split is fixed whatever the run's seed (a permutation seeded with 0): 718 training and 1,079 dev images,
the split of the assembling spec's small-scale checks. Pixels 0..16 become 0..240. No augmentation: a
one-pixel shift of an 8x8 digit is a large change. Usage::

    task = load_task_data("digits")
    task.train[0]["pixel_values"].shape  # (1, 8, 8)
"""
from __future__ import annotations

import numpy as np
import torch

from shrink.data.images import image_task
from shrink.data.task import DATASETS, LoadRequest, TaskData

TRAIN_SIZE = 718


@DATASETS.register("digits", aliases=("sklearn-digits",),
                   summary="10 classes of 8x8 grey digits bundled with scikit-learn (718 train / 1079 dev); no files")
def load_digits_task(request: LoadRequest) -> TaskData:
    """The digits task (``request.max_*_samples`` subsets are applied by ``load_task_data``)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    images = torch.from_numpy((bunch.images * 15).astype(np.uint8))[:, None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(labels)))
    train, dev = order[:TRAIN_SIZE], order[TRAIN_SIZE:]
    return image_task(request.name, (images[train], labels[train]), (images[dev], labels[dev]), None,
                      [str(digit) for digit in range(10)], None, augment=False)
