"""Which checkpoint a resumed run may trust: a manifest of every file's SHA-256, written last.

Accelerate's state holds pickles (the RNG states, the optimizer), and Accelerate loads some of them with
full unpickling and ignores their errors. So a checkpoint is loaded only when each of its files is the one
this code wrote: a manifest lists every file with its hash, and anything missing, changed or added makes
the checkpoint corrupt (a one-line error) before a byte of it is unpickled. A checkpoint whose final copy
was half-deleted while being re-saved is recovered from its complete ``.tmp-step-N`` twin.

Usage::

    write_manifest(tmp_folder)                    # after saving everything into it
    latest = latest_checkpoint(run.checkpoints)   # None when there is none; UserError when corrupt
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from shrink.errors import UserError
from shrink.runs import atomic_write_json

MANIFEST_FILE = "manifest.json"
_STEP = re.compile(r"^(\.tmp-)?step-(\d+)$")


def write_manifest(folder: Path) -> None:
    """Record the SHA-256 of every file under ``folder`` in ``folder/manifest.json``. Usage: ``write_manifest(p)``."""
    atomic_write_json(folder / MANIFEST_FILE, _hashes(folder))


def is_intact(folder: Path) -> bool:
    """True when ``folder`` holds exactly the files its manifest lists, each with its recorded hash."""
    try:
        listed = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(listed, dict) and listed == _hashes(folder)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest intact ``step-N`` checkpoint in ``folder``, recovered from ``.tmp-step-N`` when needed.

    A half-written ``.tmp-step-N`` alone is an interrupted save and is passed over; a damaged ``step-N``
    without an intact twin is a UserError. Usage: ``latest_checkpoint(Path("RUN/checkpoints"))``
    """
    steps: dict[int, dict[bool, Path]] = {}
    for path in folder.iterdir() if folder.is_dir() else ():
        match = _STEP.match(path.name)
        if match and path.is_dir():
            steps.setdefault(int(match.group(2)), {})[bool(match.group(1))] = path
    for step in sorted(steps, reverse=True):
        final, tmp = steps[step].get(False), steps[step].get(True)
        if final is not None and is_intact(final):
            return final
        if tmp is not None and is_intact(tmp):
            final = folder / tmp.name.removeprefix(".tmp-")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            return final
        if final is not None:
            raise UserError(f"checkpoint {final} is corrupt (its files are not the ones saved); delete it to resume "
                            "from an earlier one, or start again with --overwrite")
    return None


def _hashes(folder: Path) -> dict[str, str]:
    return {path.relative_to(folder).as_posix(): _sha256(path) for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name != MANIFEST_FILE}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
