"""Multi-domain data: a domain per example, DomainBed-style leave-domains-out splits, clusters of source
domains, and single-domain support + query tasks drawn uniformly over domains.

A dataset knows its domains when it is (or wraps, through ``Subset`` / ``ConcatDataset``) a
:class:`DomainDataset`: text files read with ``--domain-column``, a WILDS-style ``metadata-csv`` folder, or
the rotated image datasets (``rotated-mnist``, ``rotated-fashion-mnist``: DomainBed's Rotated-MNIST protocol).

Usage::

    task = load_task_data("rotated-fashion-mnist", max_train_samples=3000)
    split = split_by_domains(task, test_domains=["0", "75"], seed=0)
    experts = split_domains(split.sources, n_experts=2, seed=0)        # {"15": 1, "30": 0, ...}
    for episode in DomainBatchSampler(split.train_domains, support=32, query=32, steps=10, seed=0): ...
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from shrink.data.task import TaskData
from shrink.errors import UserError

log = logging.getLogger(__name__)

DOMAIN_KEY = "domain"
VALIDATION_FRACTION = 0.2  # DomainBed's training-domain validation holds out 20% of each source domain


class DomainDataset(Dataset):
    """A dataset whose examples also carry ``"domain"`` (a string); ``domains`` lists them by index.

    Usage: ``DomainDataset(TextDataset(["a", "b"], None, [0, 1]), ["site-1", "site-2"])[1]["domain"]``
    """

    def __init__(self, dataset: Dataset, domains: Sequence[Any]) -> None:
        if len(dataset) != len(domains):  # type: ignore[arg-type]
            raise ValueError("one domain per example")
        self.dataset, self.domains = dataset, [str(domain) for domain in domains]

    def __len__(self) -> int:
        return len(self.domains)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[index], DOMAIN_KEY: self.domains[index]}


def domains_of(dataset: Dataset) -> list[str]:
    """The domain of every example of ``dataset`` (through Subset and ConcatDataset); UserError without one.

    Usage: ``domains_of(task.train)[:3]  # ['0', '0', '15']``
    """
    if isinstance(dataset, DomainDataset):
        return list(dataset.domains)
    if isinstance(dataset, Subset):
        parent = domains_of(dataset.dataset)
        return [parent[index] for index in dataset.indices]
    if isinstance(dataset, ConcatDataset):
        return [domain for part in dataset.datasets for domain in domains_of(part)]
    raise UserError("the data has no domain column: name it with --domain-column (CSV/TSV/JSONL text files, "
                    "metadata-csv image folders) or use a multi-domain dataset such as rotated-fashion-mnist")


def domain_order(domains: Sequence[str]) -> list[str]:
    """The distinct domains, numerically sorted when they are all numbers (angles, years), else by name.

    Usage: ``domain_order(["15", "0", "75", "0"]) == ["0", "15", "75"]``
    """
    distinct = set(domains)
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return sorted(distinct)


@dataclass
class DomainSplit:
    """A leave-domains-out split: source training data, a held-out slice of every source domain for model
    selection (training-domain validation), and each test (target) domain whole.

    Usage: ``split.targets["75"]``, ``split.train_domains[i]`` is the domain of ``split.train[i]``
    """

    train: Dataset
    val: Dataset
    targets: dict[str, Dataset]
    sources: list[str]
    train_domains: list[str]
    val_domains: list[str]


def split_by_domains(task: TaskData, test_domains: Sequence[str], holdout_fraction: float = VALIDATION_FRACTION,
                     seed: int = 0) -> DomainSplit:
    """Pool the train and dev splits, hold ``test_domains`` out whole and split every other domain into
    training and validation examples (a seeded ``holdout_fraction`` of each). Target labels serve only to
    report accuracy, never to choose a model.

    Usage: ``split_by_domains(task, ["0", "75"], seed=1)``
    """
    pool = ConcatDataset([task.train, task.dev])
    domains = domains_of(pool)
    present = domain_order(domains)
    unknown = [domain for domain in test_domains if domain not in present]
    if unknown:
        raise UserError(f"test domain(s) {', '.join(unknown)} do not exist in {task.name}; its domains are: "
                        f"{', '.join(present)}")
    sources = [domain for domain in present if domain not in set(test_domains)]
    if not sources:
        raise UserError(f"--test-domains holds out every domain of {task.name}; leave at least one source domain")
    by_domain: dict[str, list[int]] = {domain: [] for domain in present}
    for index, domain in enumerate(domains):
        by_domain[domain].append(index)
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for domain in sources:
        members = by_domain[domain]
        order = torch.randperm(len(members), generator=generator).tolist()
        held = min(len(members) - 1, max(1, round(len(members) * holdout_fraction))) if len(members) > 1 else 0
        val += sorted(members[i] for i in order[:held])
        train += sorted(members[i] for i in order[held:])
    return DomainSplit(Subset(pool, train), Subset(pool, val),
                       {domain: Subset(pool, by_domain[domain]) for domain in test_domains}, sources,
                       [domains[i] for i in train], [domains[i] for i in val])


def split_domains(domains: Sequence[str], n_experts: int, seed: int) -> dict[str, int]:
    """Step 0 of Meta-DMoE: shuffle the source domains (seeded) and cut them into ``n_experts`` contiguous
    chunks, so each expert covers a random cluster of domains. Returns ``domain -> expert index``.

    Usage: ``split_domains(["a", "b", "c", "d"], 2, seed=0)  # {"c": 0, "a": 0, "d": 1, "b": 1}``
    """
    distinct = domain_order(domains)
    if n_experts < 1:
        raise UserError(f"the number of experts must be at least 1, got {n_experts}")
    if len(distinct) < n_experts:
        raise UserError(f"{n_experts} experts need at least {n_experts} source domains, but there are "
                        f"{len(distinct)} ({', '.join(distinct)}); use fewer experts or more domains")
    order = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed)).tolist()
    bounds = [round(len(distinct) * k / n_experts) for k in range(n_experts + 1)]
    return {distinct[order[i]]: expert for expert in range(n_experts)
            for i in range(bounds[expert], bounds[expert + 1])}


@dataclass(frozen=True)
class DomainTask:
    """One meta-learning task: a domain and disjoint support / query example indices drawn from it.

    Usage: ``task.support``, ``task.query`` (indices into the dataset the sampler was built on)
    """

    domain: str
    support: list[int]
    query: list[int]


class DomainBatchSampler:
    """Single-domain tasks: a domain drawn uniformly over domains (not over examples), then ``support`` +
    ``query`` examples of it drawn without replacement, so support and query never overlap. A domain with
    fewer than ``support + query`` examples gives all of them, split in the same proportion (with a warning).

    Several processes draw the same sequence and each takes every ``world_size``-th task, from ``rank``.
    Usage: ``for task in DomainBatchSampler(split.train_domains, 32, 32, steps=100, seed=0): ...``
    """

    def __init__(self, domains: Sequence[str], support: int, query: int, steps: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if support < 1 or query < 1:
            raise UserError(f"support and query sizes must be at least 1, got {support} and {query}")
        self.by_domain: dict[str, list[int]] = {}
        for index, domain in enumerate(domains):
            self.by_domain.setdefault(domain, []).append(index)
        small = sorted(d for d, members in self.by_domain.items() if len(members) < 2)
        if small:
            raise UserError(f"domain(s) {', '.join(small)} have fewer than 2 examples: no disjoint support and query")
        self.names = domain_order(list(self.by_domain))
        self.support, self.query, self.steps, self.seed = support, query, steps, seed
        self.rank, self.world_size = rank, world_size
        short = [d for d in self.names if len(self.by_domain[d]) < support + query]
        if short:
            log.warning("domain(s) %s have fewer than support + query = %d examples; their tasks use every example",
                        ", ".join(short), support + query)

    def __len__(self) -> int:
        return self.steps

    def task(self, step: int, slot: int = 0) -> DomainTask:
        """Task number ``step * world_size + slot`` of the seeded sequence (the same in every process)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step * self.world_size + slot)
        domain = self.names[int(torch.randint(len(self.names), (1,), generator=generator))]
        members = self.by_domain[domain]
        total = min(len(members), self.support + self.query)
        picked = [members[i] for i in torch.randperm(len(members), generator=generator)[:total].tolist()]
        cut = self.support if total == self.support + self.query else \
            min(total - 1, max(1, math.floor(total * self.support / (self.support + self.query))))
        return DomainTask(domain, picked[:cut], picked[cut:])

    def __iter__(self) -> Iterator[DomainTask]:
        return (self.task(step, self.rank) for step in range(self.steps))


__all__ = ["DOMAIN_KEY", "DomainBatchSampler", "DomainDataset", "DomainSplit", "DomainTask", "domain_order",
           "domains_of", "split_by_domains", "split_domains"]
