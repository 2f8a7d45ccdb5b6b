"""Words of a text as the augmenters see them: whitespace tokens whose punctuation is kept around a core.

Substitution replaces a word's core (``film`` in ``"film,"``) and keeps its punctuation; swap and deletion
move whole tokens. ``STOP_WORDS`` (common English function words) are never replaced by the TinyBERT
augmenter, as in TinyBERT's augmentation.

Usage::

    words = split_words("A good film, really.")
    words[2].core  # 'film'
    join_words(words)  # 'A good film, really.'
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)

STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves s t don shouldn wasn weren won wouldn isn
aren couldn didn doesn hadn hasn haven mightn mustn needn shan ll re ve d m o y ain ma
""".split())


@dataclass(frozen=True)
class Word:
    """One whitespace token: leading punctuation, core, trailing punctuation."""

    prefix: str
    core: str
    suffix: str

    @property
    def text(self) -> str:
        """The token as written."""
        return self.prefix + self.core + self.suffix

    @property
    def alphabetic(self) -> bool:
        """True when the core is letters only (``film``, not ``1999`` or ``--``)."""
        return self.core.isalpha()

    def with_core(self, core: str) -> Word:
        """The same token with ``core`` in place of its core."""
        return replace(self, core=core)


def split_words(text: str) -> list[Word]:
    """The whitespace tokens of ``text`` split into prefix, core and suffix. Usage: ``split_words("Hi, you")``."""
    words = []
    for token in text.split():
        prefix, core, suffix = _CORE.match(token).groups()  # type: ignore[union-attr]
        words.append(Word(prefix, core, suffix) if core else Word("", "", token))
    return words


def join_words(words: Sequence[Word]) -> str:
    """The text of ``words`` joined by single spaces. Usage: ``join_words(split_words(text))``."""
    return " ".join(word.text for word in words)


def replaceable(word: Word) -> bool:
    """A word TinyBERT-style augmentation may replace: alphabetic and not a stop word."""
    return word.alphabetic and word.core.lower() not in STOP_WORDS


def pick(rng: np.random.Generator, candidates: Sequence[int], count: int) -> list[int]:
    """``count`` of ``candidates`` drawn without replacement, in text order. Usage: ``pick(rng, [0, 2, 5], 2)``."""
    if count <= 0 or not candidates:
        return []
    chosen = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
    return sorted(candidates[int(i)] for i in chosen)


__all__ = ["STOP_WORDS", "Word", "join_words", "pick", "replaceable", "split_words"]
