"""One Likeness per data directory: an exclusive `flock` on `<data_dir>/likeness.lock`.

`likeness run` holds it for the life of the process, so a second `run` on the same data directory stops
with a clear message instead of sharing the database and the job queue, and `likeness restore` takes it
before it touches anything, so it never replaces a database under a running bot.

The kernel releases a `flock` when its process ends, however it ends (even SIGKILL or a crash), so a
stale lock file never blocks a restart. The file is never deleted: removing it while another process
waits on it would let two processes hold "the" lock on two different files. It holds the owner's pid,
for the message only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_NAME = "likeness.lock"


class InstanceLockedError(RuntimeError):
    """Another process holds the data directory's lock (the bot is running)."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        self.data_dir = data_dir
        self.pid = pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(
            f"Likeness is already running on {data_dir.resolve()} ({who} holds {data_dir.resolve() / LOCK_NAME}). "
            "Stop it first (docker compose stop, systemctl stop, or Ctrl+C in its terminal)."
        )


class InstanceLock:
    """Exclusive, non-blocking lock on a data directory; a context manager."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock now or raise InstanceLockedError; never waits."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this lock object")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise InstanceLockedError(self.data_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def ensure_not_running(data_dir: Path) -> None:
    """Raise InstanceLockedError when a process holds the data directory's lock (for checks such as `doctor`)."""
    if not (data_dir / LOCK_NAME).exists():
        return
    with InstanceLock(data_dir):
        pass


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
