"""An exclusive advisory lock on a run directory, so that two processes never write one run.

The lock is ``fcntl.flock`` on ``RUN/.lock``: the operating system releases it when the holding process
ends, however it ends, so a killed run never leaves a stale lock. The file names its holder, which a
refused second writer reports.

Usage::

    lock = RunLock.acquire(Path("runs/r20"))   # UserError naming the holder when another process has it
    ...
    lock.release()
"""
from __future__ import annotations

import fcntl
import os
import socket
import sys
from pathlib import Path

from shrink.errors import UserError

LOCK_FILE = ".lock"


class RunLock:
    """A held lock on one folder (see the module docstring). Usage: ``RunLock.acquire(folder).release()``."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder, self._fd = folder, fd

    @classmethod
    def acquire(cls, folder: Path) -> "RunLock":
        """Lock ``folder`` (which must exist) without waiting; UserError naming the holder when it is taken."""
        path = folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
            raise UserError(f"run directory {folder} is in use by {holder}; wait for it to end, "
                            "or pass another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv[:3])})\n".encode())
        return cls(folder, fd)

    def release(self) -> None:
        """Give the lock back (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = -1

