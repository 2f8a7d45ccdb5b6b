"""Errors a person can act on, and the CLI wrapper that turns them into one line and exit status 2.

Usage::

    raise UserError("data file train.tsv not found in DIR; pass --data-dir")

    @cli_entry
    def main(argv=None): ...
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., object])

EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader closed


class UserError(Exception):
    """Bad input: the message says what is wrong and what to do. CLIs exit with status 2."""


def cli_entry(main: F) -> F:
    """Wrap a console-script ``main`` so that UserError prints one line and exits 2.

    Usage: ``@cli_entry\ndef main(argv=None) -> int: ...``
    """

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        except BrokenPipeError:
            # The reader went away (`shrink recipes | head`): stop quietly, as other command-line tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)

    return wrapper  # type: ignore[return-value]
