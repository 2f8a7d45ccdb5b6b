"""What a long command shows while it works: progress bars on a terminal, one line per epoch otherwise.

Piped into a log file, tqdm's carriage-return redraws are noise, so bars appear only when stderr is a
terminal; where no bar is shown, each epoch prints one line instead. ``verbosity`` (``--quiet`` /
``--verbose``) silences both or prints the lines beside the bars too.

Usage::

    bar = tqdm(total=steps, desc=name, disable=not bars_on(config.progress, config.verbosity))
    if lines_on(config.progress, config.verbosity): print(f"{name} epoch 1/3: ...")
"""
from __future__ import annotations

import sys


def on_terminal() -> bool:
    """True when progress output goes to a terminal (stderr, where tqdm draws)."""
    return sys.stderr.isatty()


def bars_on(progress: bool, verbosity: str = "normal") -> bool:
    """Draw progress bars: asked for, not quiet, and on a terminal. Usage: ``tqdm(..., disable=not bars_on(True))``."""
    return progress and verbosity != "quiet" and on_terminal()


def lines_on(progress: bool, verbosity: str = "normal") -> bool:
    """Print one line per epoch: always when verbose, else wherever no bar is drawn (logs, --no-progress).

    Usage: ``if lines_on(config.progress, config.verbosity): print(summary)``
    """
    return verbosity == "verbose" or (verbosity == "normal" and not bars_on(progress, verbosity))
