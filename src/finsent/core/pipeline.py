"""Two stages beside the calling thread, for file-to-file scoring at engine speed: `prefetch` reads ahead and
`WriteBehind` writes behind, each on its own thread through a bounded queue, so that the caller (the engine) waits on
neither. Items keep their order, and the first exception of any stage is raised on the calling thread unchanged."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
DEPTH = 2  # items a stage may hold ready beside the one it works on
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _offer(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put `item` on `q`, waiting while it is full, unless `stop` is set first; whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            pass
    return False


def prefetch(items: Iterable[T], depth: int = DEPTH, name: str = "finsent-read") -> Iterator[T]:
    """`items` in order, iterated on a thread up to `depth` items ahead of the consumer.

    An exception raised by `items` is raised here, unchanged, in its place. Closing this generator (close(), or
    contextlib.closing around a loop that raises) stops the thread at its next item, closes `items` where it is a
    generator, and joins the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    it = iter(items)

    def run() -> None:
        try:
            for item in it:
                if not _offer(q, item, stop):
                    return
            _offer(q, _DONE, stop)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            _offer(q, _Failure(e), stop)
        finally:
            getattr(it, "close", lambda: None)()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not _DONE:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class WriteBehind(Generic[T]):
    """`write(item)` for each item put, in order, on a thread with at most `depth` items waiting: a context manager.

    Once `write` has raised, the thread stops and put() raises that exception; leaving the block waits for the writes
    queued and raises it too. Where the block itself raises, its exception wins: the queued items are still written
    (at most `depth`), then the thread stops."""

    def __init__(self, write: Callable[[T], None], depth: int = DEPTH, name: str = "finsent-write"):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._failed = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> WriteBehind[T]:
        self._thread.start()
        return self

    def put(self, item: T) -> None:
        if not _offer(self._queue, item, self._failed):
            raise self._error

    def __exit__(self, exc_type, exc, tb) -> bool:
        _offer(self._queue, _DONE, self._failed)
        self._thread.join()
        if exc is None and self._error is not None:
            raise self._error
        return False

    def _run(self) -> None:
        while (item := self._queue.get()) is not _DONE:
            try:
                self._write(item)
            except BaseException as e:  # noqa: BLE001 - raised on the calling thread by put() or on leaving the block
                self._error = e
                self._failed.set()
                return
