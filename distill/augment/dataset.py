"""The training set of an augmented stage: the originals, then ``copies`` augmented copies of each labelled
original, remade every ``refresh_every`` epochs, cached on disk by content.

Copies are always made from the originals (never from an earlier round's copies, so edits do not compound,
spec §6.7), carry the gold label only when the stage has no KD term (else the teacher labels them online),
and are stored in ``CACHE/<key>.json`` (written atomically) where the key digests the data, the policy with
its settings and model fingerprints, the seed, the round and the number of copies: a re-run or ``--resume``
reads them back instead of augmenting again. The engine asks :meth:`AugmentedTrainSet.example_at` with the
epoch, so every epoch of a round sees the same copies.

Usage::

    train = AugmentedTrainSet(originals, len(task.train), policy, copies=4, seed=42,
                              cache=AugmentCache(run / "augmented"))
    train.example_at(epoch=0, index=len(originals))  # the first copy of example 0
    train.costs  # [{"round": 0, "sentences": ..., "seconds": ..., "seconds_per_1000_sentences": ..., "cached": False}]
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from distill.augment.policy import ATTEMPTS, Example, Policy
from distill.augment.unlabeled import ignore_label
from shrink.digest import dataset_digest, value_digest
from shrink.progress import bars_on
from shrink.runs import atomic_write_json
from shrink.train import process_state


class AugmentCache:
    """Augmented copies by key, one JSON file each, written atomically. Usage: ``AugmentCache(run / "augmented")``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        """Where the copies of ``key`` live."""
        return self.folder / f"{key}.json"

    def load(self, key: str) -> list[list[Example]] | None:
        """The cached copies, or None when absent (or unreadable: they are made again)."""
        try:
            rows = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return [[(text, pair) for text, pair in copy] for copy in rows]

    def save(self, key: str, copies: list[list[Example]]) -> None:
        """Store ``copies`` under ``key`` (a temp file renamed into place: never half-written)."""
        atomic_write_json(self.path(key), [[list(example) for example in copy] for copy in copies])


class AugmentedTrainSet(Dataset):
    """Originals (indices 0..n-1) then copy c of labelled original i at n + c·m + i (m = ``augmentable``).

    Examples carry their ``index`` as the distillation collate expects.
    Usage: ``AugmentedTrainSet(originals, m, policy, 4, 42, cache).example_at(3, index)``
    """

    def __init__(self, originals: Dataset, augmentable: int, policy: Policy, copies: int, seed: int,
                 cache: AugmentCache, *, refresh_every: int | None = None, gold_copies: bool = False,
                 regression: bool = False, batch_size: int = 32, progress: bool = True,
                 verbosity: str = "normal") -> None:
        self.originals, self.augmentable, self.policy, self.copies = originals, augmentable, policy, copies
        self.seed, self.cache, self.refresh_every, self.gold_copies = seed, cache, refresh_every, gold_copies
        self.regression, self.batch_size, self.progress, self.verbosity = regression, batch_size, progress, verbosity
        self.costs: list[dict[str, Any]] = []
        self._round: int | None = None
        self._copies: list[list[Example]] = []
        self._data_key = dataset_digest(Subset(originals, range(augmentable)))

    def __len__(self) -> int:
        return len(self.originals) + self.augmentable * self.copies  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.example_at(0, index)

    def round_of(self, epoch: int) -> int:
        """The refresh round an epoch belongs to (0 without refresh)."""
        return 0 if self.refresh_every is None else epoch // self.refresh_every

    def example_at(self, epoch: int, index: int) -> dict[str, Any]:
        """Example ``index`` as seen in ``epoch``."""
        total = len(self.originals)  # type: ignore[arg-type]
        if index < total:
            return {**self.originals[index], "index": index}
        copy, source = divmod(index - total, self.augmentable)
        text, pair = self.copies_of(self.round_of(epoch))[copy][source]
        label = self.originals[source]["label"] if self.gold_copies else ignore_label(self.regression)
        return {"text": text, "text_pair": pair, "label": label, "index": index}

    def key(self, round: int) -> str:
        """The cache key of one round's copies."""
        return value_digest({"data": self._data_key, "policy": self.policy.identity(), "seed": self.seed,
                             "round": round, "copies": self.copies, "attempts": ATTEMPTS})

    def copies_of(self, round: int) -> list[list[Example]]:
        """The copies of ``round``: from the cache, else made now (and cached)."""
        if self._round != round:
            self._copies, self._round = self._load_or_make(round), round
        return self._copies

    def _load_or_make(self, round: int) -> list[list[Example]]:
        key, started = self.key(round), time.perf_counter()
        copies = self.cache.load(key)
        cached = copies is not None
        if copies is None:
            copies = self._make(round)
            self.cache.save(key, copies)
        seconds = time.perf_counter() - started
        sentences = self.copies * sum(1 + (self.originals[i]["text_pair"] is not None)
                                      for i in range(self.augmentable))
        cost = {"round": round, "sentences": sentences, "seconds": seconds, "cached": cached,
                "seconds_per_1000_sentences": 1000 * seconds / max(sentences, 1)}
        self.costs.append(cost)
        source = "read from the cache" if cached else f"{cost['seconds_per_1000_sentences']:.2f} s per 1,000 sentences"
        process_state().print(f"augmentation round {round} ({'+'.join(self.policy.names)}): {sentences} sentences "
                              f"in {seconds:.1f} s, {source}")
        return copies

    def _make(self, round: int) -> list[list[Example]]:
        made: list[list[Example]] = [[] for _ in range(self.copies)]
        starts = range(0, self.augmentable, self.batch_size)
        for start in tqdm(starts, desc=f"augmenting (round {round})", unit="batch",
                          disable=not bars_on(self.progress, self.verbosity)):
            indices = list(range(start, min(start + self.batch_size, self.augmentable)))
            examples = [(self.originals[i]["text"], self.originals[i]["text_pair"]) for i in indices]
            for copy, rows in enumerate(self.policy.copies(examples, indices, self.seed, round, self.copies)):
                made[copy].extend(rows)
        return made


__all__ = ["AugmentCache", "AugmentedTrainSet"]
