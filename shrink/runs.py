"""The run directory: one folder per command, written so that nothing half-done looks complete.

Layout::

    RUN/recipe.yaml       the resolved recipe
    RUN/RUNNING           present while the command runs (removed by ``finish``)
    RUN/.lock             the advisory lock of the process writing the run (see shrink.runlock)
    RUN/checkpoints/      Accelerate states, ``step-N`` folders, renamed into place when whole
    RUN/best/             the best model so far (by the dev metric)
    RUN/model/            the final model
    RUN/metrics.json      every figure the command printed, and its provenance; written last
    RUN/report.md         the human-readable summary

Usage::

    with RunDir.create("runs/r56", resume=False) as run:
        run.write_json("metrics.json", {...})
        run.finish(metrics, report_lines)
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from shrink.errors import UserError
from shrink.provenance import provenance, utc_now
from shrink.runlock import LOCK_FILE, RunLock

RUNNING_MARKER = "RUNNING"
# What open() and mkdir() ask for; the umask then takes away what the user does not share.
FILE_MODE, DIR_MODE = 0o666, 0o777
RECIPE_FILE = "recipe.yaml"
FINAL_MODEL = "model"
# What a run holds before it has done any work: a failed start that left only these saved nothing.
STUB_FILES = (LOCK_FILE, RUNNING_MARKER, RECIPE_FILE)


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
    with contextlib.suppress(OSError):  # no /proc: fall through to set-and-restore
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
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
    """A run directory (see the module docstring). Usage: ``with RunDir.create(path, resume=True) as run: ...``.

    ``create`` locks the folder (:mod:`shrink.runlock`) for this process. Used as a context manager, a run
    that fails cleans up after itself: a new run refused for bad input (a UserError) is removed, and so is
    one that failed before saving any work; a run it replaced with ``overwrite`` comes back in its place.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock: RunLock | None = None
        self._previous: tuple[Path, RunLock] | None = None  # a run set aside by overwrite, still locked
        self._fresh = False
        self._started_at, self._resumed = utc_now(), False

    @classmethod
    def create(cls, path: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> "RunDir":
        """Open ``path`` for a new run, or for resuming one, and lock it for this process.

        Only a recognisable run directory (:func:`is_run_dir`) is resumed or replaced; a finished run is never
        silently overwritten: pass ``overwrite`` (``--overwrite``) to replace it. Usage: ``RunDir.create("runs/x")``
        """
        run = cls(path)
        try:
            run._open(resume, overwrite)
        except OSError as err:
            run.close(failed=True)
            raise UserError(f"cannot write the run directory {run.path}: {err.strerror or err}; "
                            "pass an --out you can write to") from None
        except BaseException:
            run.close(failed=True)
            raise
        return run

    def _open(self, resume: bool, overwrite: bool) -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise UserError(f"--out {path} is a file, not a run directory; pass another --out")
        check_output_path(path, "--out")
        self._recover_replaced()
        if _has_content(path):
            if not is_run_dir(path):
                raise UserError(f"{path} is not a run directory (no {RECIPE_FILE} with {RUNNING_MARKER}, "
                                f"metrics.json or {LOCK_FILE}) and is not empty; refusing to write into it: "
                                "pass a new or empty --out")
            if resume and self.is_complete():
                raise UserError(f"run {path} is already complete; nothing to resume")
            if not (resume or overwrite):
                raise UserError(f"run directory {path} exists and is not empty; pass --resume to continue it "
                                "or --overwrite to start again")
            lock = RunLock.acquire(path)
            if overwrite and not resume:
                self._set_aside(lock)
            else:
                self._lock = lock
                self._resumed = resume
        elif resume:
            raise UserError(f"cannot resume: run directory {path} does not exist or is empty")
        else:
            path.mkdir(parents=True, exist_ok=True)
            self._lock = RunLock.acquire(path)
            self._fresh = True
        atomic_write_text(path / RUNNING_MARKER, f"pid {os.getpid()}\n")

    @property
    def _aside(self) -> Path:
        return self.path.parent / f".{self.path.name}.replaced"

    def _set_aside(self, lock: RunLock) -> None:
        """Move the run being replaced next to its place (still locked) and start an empty, locked folder."""
        aside = self._aside
        os.replace(self.path, aside)
        self._previous = (aside, lock)
        self.path.mkdir()
        self._fresh = True  # ours from here: a failure below removes it and brings the old run back
        self._lock = RunLock.acquire(self.path)

    @property
    def replaced(self) -> Path | None:
        """Where the run that ``overwrite`` replaces waits until this one is kept (None when there is none)."""
        return self._previous[0] if self._previous is not None else None

    def _recover_replaced(self) -> None:
        """A replacement killed before it finished left the old run aside (unlocked once it died): the old
        run comes back when the new one saved nothing; otherwise the new one stands and the old is dropped."""
        if not self._aside.is_dir():
            return
        try:
            lock = RunLock.acquire(self._aside)
        except UserError:  # the replacing process is alive: not ours to touch
            return
        try:
            if self._has_work():
                shutil.rmtree(self._aside)
            else:
                shutil.rmtree(self.path, ignore_errors=True)
                os.replace(self._aside, self.path)
        finally:
            lock.release()

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        self.close(failed=exc_type is not None, bad_input=exc_type is not None and issubclass(exc_type, UserError))

    def close(self, failed: bool = False, bad_input: bool = False) -> None:
        """Release the lock; after a failure, remove a new run that has nothing worth keeping.

        A new run refused for bad input is removed whole unless it saved its final model; one that failed
        otherwise is kept (for ``--resume``) when it saved any work. A removed run's replaced predecessor
        is restored.
        Usage: ``run.close(failed=True, bad_input=True)``
        """
        # a final model is always kept (a late refusal, such as an ONNX parity check, costs no training)
        discard = failed and not (self.path / FINAL_MODEL).is_dir() and (bad_input or not self._has_work())
        if discard and self._fresh:
            shutil.rmtree(self.path, ignore_errors=True)
        if self._previous is not None:
            aside, lock = self._previous
            if not discard:
                shutil.rmtree(aside, ignore_errors=True)
            elif not self.path.exists():  # else someone else's folder took the place: the old run waits aside
                os.replace(aside, self.path)
            lock.release()
            self._previous = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._fresh = False  # closed: a later failure (after finish) must not remove the finished run

    def _has_work(self) -> bool:
        return _has_content(self.path, ignore=STUB_FILES)

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
        """Add the provenance to ``metrics``, write it as metrics.json and ``report`` as report.md, then mark the
        run complete and release it (the caller's dict then equals metrics.json)."""
        metrics["provenance"] = provenance(self._started_at, self._resumed)
        self.write_json("metrics.json", metrics)
        self.write_text("report.md", report)
        (self.path / RUNNING_MARKER).unlink(missing_ok=True)
        self.close()


def is_run_dir(path: str | os.PathLike) -> bool:
    """True for a folder a shrink command wrote: its recipe with a RUNNING marker, metrics.json or the lock file.

    Usage: ``is_run_dir("runs/r20")``
    """
    path = Path(path)
    markers = (RUNNING_MARKER, "metrics.json", LOCK_FILE)
    return (path / RECIPE_FILE).is_file() and any((path / name).exists() for name in markers)


def refuse_unfinished(path: str | os.PathLike) -> None:
    """UserError when ``path`` is an unfinished run (RUNNING marker) or its ``model/``; its ``best/`` is
    accepted with a warning, since naming it asks for the best model so far.

    Usage: ``refuse_unfinished("runs/r20/model")``
    """
    path = Path(path)
    run = next((p for p in (path, path.parent) if (p / RUNNING_MARKER).exists() and (p / RECIPE_FILE).exists()), None)
    if run is None:
        return
    if run != path and path.name == "best":
        print(f"warning: {run} has not finished; using its best model so far", file=sys.stderr)
        return
    raise UserError(f"run {run} has not finished (it is running or was interrupted: {RUNNING_MARKER} marker); "
                    f"finish it with --resume, or pass {run / 'best'} to use its best model so far")


def check_output_path(path: str | os.PathLike, flag: str) -> Path:
    """UserError unless ``path`` can be created: no folder above it is a plain file, and the nearest existing
    one is writable. Checked before any work, so a bad output path costs nothing.

    Usage: ``check_output_path("out/bench.json", "--json")``
    """
    path = Path(path)
    existing = next(parent for parent in path.absolute().parents if parent.exists())
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder; pass a path in a folder you can write")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {existing} is not writable; pass a path in a folder you can write")
    return path


def _has_content(path: Path, ignore: tuple[str, ...] = (LOCK_FILE,)) -> bool:
    return path.is_dir() and any(entry.name not in ignore for entry in path.iterdir())
