"""The run directory: one folder per command, written so that nothing half-done looks complete.

Layout::

    RUN/recipe.yaml       the resolved recipe
    RUN/RUNNING           present while the command runs (removed by ``finish``)
    RUN/checkpoints/      Accelerate states, ``step-N`` folders, renamed into place when whole
    RUN/best/             the best model so far (by the dev metric)
    RUN/model/            the final model
    RUN/metrics.json      every figure the command printed; written last
    RUN/report.md         the human-readable summary

Usage::

    run = RunDir.create("runs/r56", resume=False)
    run.write_json("metrics.json", {...})
    run.finish(metrics, report_lines)
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from shrink.errors import UserError

RUNNING_MARKER = "RUNNING"
# What open() and mkdir() ask for; the umask then takes away what the user does not share.
FILE_MODE, DIR_MODE = 0o666, 0o777


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename.

    The file gets the mode a plain ``open()`` gives (0666 less the umask), so a server running as another
    user can read it; ``mkstemp``'s private 0600 would follow the file through the rename.
    Usage: ``atomic_write_bytes("RUN/model.bin", payload)``
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomic text write. Usage: ``atomic_write_text("RUN/report.md", text)``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomic JSON write (indented, keys in insertion order)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def current_umask() -> int:
    """The process umask. Linux reports it in /proc; elsewhere it is read by setting it and setting it back.

    Usage: ``FILE_MODE & ~current_umask()  # 0o644 under the usual 022``
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_like_open(folder: Path) -> None:
    """Give everything under ``folder`` the mode open() / mkdir() would have given it.

    Some writers (safetensors among them) create private 0600 files through their own temp files; a model
    folder is meant to be read by whoever serves it.
    Usage: ``share_like_open(Path("RUN/.model.tmp"))``
    """
    mask = current_umask()
    for item in (folder, *folder.rglob("*")):
        if not item.is_symlink():
            item.chmod((DIR_MODE if item.is_dir() else FILE_MODE) & ~mask)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_dir(final: Path) -> "_AtomicDir":
    """Context manager: build a folder under a temp name, rename it to ``final`` on success.

    Usage: ``with atomic_dir(Path("RUN/model")) as tmp: save_into(tmp)``
    """
    return _AtomicDir(Path(final))


class _AtomicDir:
    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.parent / f".{final.name}.tmp"

    def __enter__(self) -> Path:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        share_like_open(self.tmp)
        old = self.final.parent / f".{self.final.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        shutil.rmtree(old, ignore_errors=True)


class RunDir:
    """A run directory (see the module docstring). Usage: ``RunDir.create(path, resume=True)``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> "RunDir":
        """Open ``path`` for a new run, or for resuming one.

        A finished run is never silently overwritten: pass ``overwrite`` (``--overwrite``) to replace it.
        """
        run = cls(path)
        if run.path.exists() and any(run.path.iterdir()):
            if resume:
                if run.is_complete():
                    raise UserError(f"run {run.path} is already complete; nothing to resume")
            elif overwrite:
                shutil.rmtree(run.path)
            else:
                raise UserError(
                    f"run directory {run.path} exists and is not empty; pass --resume to continue it "
                    "or --overwrite to start again"
                )
        elif resume:
            raise UserError(f"cannot resume: run directory {run.path} does not exist")
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.path / RUNNING_MARKER, f"pid {os.getpid()}\n")
        return run

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def is_complete(self) -> bool:
        """True once ``finish`` ran: metrics written and the RUNNING marker gone."""
        return (self.path / "metrics.json").exists() and not (self.path / RUNNING_MARKER).exists()

    def write_json(self, name: str, obj: Any) -> Path:
        """Atomically write ``obj`` as JSON under the run directory."""
        target = self.path / name
        atomic_write_json(target, obj)
        return target

    def write_text(self, name: str, text: str) -> Path:
        """Atomically write ``text`` under the run directory."""
        target = self.path / name
        atomic_write_text(target, text)
        return target

    def finish(self, metrics: dict[str, Any], report: str) -> None:
        """Write metrics.json and report.md, then mark the run complete."""
        self.write_json("metrics.json", metrics)
        self.write_text("report.md", report)
        (self.path / RUNNING_MARKER).unlink(missing_ok=True)

    def abandon(self) -> None:
        """Remove a run directory that a bad-input error stopped before any work was saved."""
        if self.path.exists() and not self.checkpoints.exists():
            shutil.rmtree(self.path, ignore_errors=True)
