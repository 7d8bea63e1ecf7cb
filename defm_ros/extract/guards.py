"""What keeps an extraction's outputs whole: one writer per output, and no Ctrl-C while they are closed."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write` the file's bytes under a temporary name, then rename it over `path`: a reader sees the old file or
    the new, never half of one. The temporary name is per process (writers on Ray use their own) and matches
    `.*.tmp`, which the outputs' own clean-ups remove after a kill."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


@contextlib.contextmanager
def output_lock(path: Path) -> Iterator[None]:
    """One writer per output: a second job on the same bag (a retried task) fails fast.

    The lock files stay, in OUT/.locks/: deleting one is unsafe while another process may be waiting on
    it (two writers could then each hold a lock on a different file of the same name)."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RuntimeError(f"another extraction is writing to these outputs ({path} is locked)") from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Defer Ctrl-C while outputs are being closed, so a second Ctrl-C cannot leave them half-written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if pending:
        raise KeyboardInterrupt
