"""A bounded reader thread: an iterator run ahead of its consumer, its errors raised where they happened."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any


class Prefetch:
    """Runs `make()`'s iterator on a background thread, at most `depth` items ahead of the consumer.

    What the thread raises is raised in the consumer where it happened. close() stops the thread (also
    mid-iteration: a limit reached, Ctrl-C) and waits for it, so the iterator is closed on its own thread.
    """

    _END = object()

    def __init__(self, make: Callable[[], Iterator[Any]], depth: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(make,), name="extract-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, make: Callable[[], Iterator[Any]]) -> None:
        try:
            items = make()
            try:
                for item in items:
                    if not self._put(item):
                        return
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((self._END, exc))
            return
        self._put((self._END, None))

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if isinstance(item, tuple) and len(item) == 2 and item[0] is self._END:
                if item[1] is not None:
                    raise item[1]
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout=10.0)
