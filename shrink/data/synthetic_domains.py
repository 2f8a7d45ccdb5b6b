"""``synthetic-domains``: the Meta-DMoE spec's ``cluster_shapes`` regime (§7.1), generated.

3x16x16 images of 10 classes. A class prototype is a random 4x4 binary pattern upsampled x4, rolled by up
to 2 px, plus noise. Each of 4 source clusters has its own prototype set (same labels, other shapes) and
4 domains; a domain is a foreground / background colour, an additive texture (0.2) and noise (0.1). The
8 target domains ``t0``..``t7`` have new colours and the shapes of cluster k mod 4. Domains are named
``c<cluster>d<k>``; the spec (``synthetic-domains:200``) is the number of images per domain (train), dev
gets a quarter as many. Usage: ``load_task_data("synthetic-domains:100", seed=0)``
"""
from __future__ import annotations

import numpy as np
import torch

from shrink.data.domains import DomainDataset
from shrink.data.images import Split, image_task, parse_dims
from shrink.data.task import DATASETS, LoadRequest, TaskData, takes_spec

CLUSTERS, DOMAINS_PER_CLUSTER, TARGETS, CLASSES, SIZE, CELL = 4, 4, 8, 10, 16, 4
PER_DOMAIN = 200


def _domain_images(nuisance: np.random.Generator, rng: np.random.Generator, prototypes: np.ndarray,
                   count: int) -> Split:
    """``count`` images of one domain: its colours and texture from ``nuisance``, the examples from ``rng``."""
    foreground, background = nuisance.uniform(0.6, 1.0, (3, 1, 1)), nuisance.uniform(0.0, 0.3, (3, 1, 1))
    texture = 0.2 * nuisance.uniform(-1, 1, (3, SIZE, SIZE))
    labels = rng.integers(0, CLASSES, count)
    images = np.empty((count, 3, SIZE, SIZE), dtype=np.uint8)
    for index, label in enumerate(labels):
        shape = np.roll(prototypes[label], tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
        pixels = background + (foreground - background) * shape + texture + 0.1 * rng.normal(size=(3, SIZE, SIZE))
        images[index] = np.clip(np.rint(pixels * 255), 0, 255)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def cluster_shapes(per_domain: int, seed: int, split: int) -> tuple[Split, list[str]]:
    """Images of every source and target domain for ``(seed, split)`` and each image's domain name.

    Prototypes and domain nuisances depend on ``seed`` only, so train and dev (``split`` 0 / 1) share them.
    Usage: ``(images, labels), domains = cluster_shapes(200, seed=0, split=0)``
    """
    layout = np.random.default_rng([seed, 7])
    patterns = layout.integers(0, 2, (CLUSTERS, CLASSES, CELL, CELL)).astype(np.float64)
    prototypes = np.kron(patterns, np.ones((SIZE // CELL, SIZE // CELL)))
    names = [(f"c{c}d{d}", c) for c in range(CLUSTERS) for d in range(DOMAINS_PER_CLUSTER)]
    names += [(f"t{k}", k % CLUSTERS) for k in range(TARGETS)]
    parts, domains = [], []
    for number, (name, cluster) in enumerate(names):
        parts.append(_domain_images(np.random.default_rng([seed, 11, number]),
                                    np.random.default_rng([seed, 13, number, split]), prototypes[cluster], per_domain))
        domains += [name] * per_domain
    return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])), domains


@DATASETS.register("synthetic-domains", aliases=("cluster-shapes",),
                   summary="generated multi-domain shapes, synthetic-domains[:N] (Meta-DMoE's cluster_shapes "
                           "regime); offline, for demos and tests")
@takes_spec
def load_synthetic_domains(request: LoadRequest) -> TaskData:
    """Generate the cluster_shapes regime. Usage: ``load_task_data("synthetic-domains:50")``."""
    per_domain = (parse_dims(request.spec, 1, "synthetic-domains", "200") or (PER_DOMAIN,))[0]
    (train, train_domains), (dev, dev_domains) = (cluster_shapes(count, request.seed, split)
                                                  for split, count in ((0, per_domain), (1, max(1, per_domain // 4))))
    task = image_task(request.full_name, train, dev, None, [f"shape-{k}" for k in range(CLASSES)], None,
                      augment=False)
    task.train, task.dev = DomainDataset(task.train, train_domains), DomainDataset(task.dev, dev_domains)
    return task
