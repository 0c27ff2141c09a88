"""core.pipeline: read ahead and write behind on threads, in order, the first error raised on the caller, no thread
left behind."""

import threading
from contextlib import closing

import pytest

from finsent.core.pipeline import WriteBehind, prefetch


def stage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("test-stage")]


@pytest.fixture(autouse=True)
def no_thread_left():
    yield
    assert stage_threads() == []


def test_prefetch_keeps_order_and_reads_ahead():
    third_read = threading.Event()

    def items():
        for i in range(100):
            if i == 2:
                third_read.set()
            yield i

    ahead = prefetch(items(), depth=2, name="test-stage")
    assert next(ahead) == 0
    assert third_read.wait(10)  # read on the thread while the consumer holds item 0
    assert [0, *ahead] == list(range(100))


def test_prefetch_raises_the_readers_error_in_its_place():
    error = ValueError("row 5: bad")

    def items():
        yield from range(5)
        raise error

    got = []
    with pytest.raises(ValueError) as info:
        for item in prefetch(items(), name="test-stage"):
            got.append(item)
    assert info.value is error and got == list(range(5))


def test_closing_prefetch_early_stops_and_closes_the_source():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    with pytest.raises(KeyError), closing(prefetch(endless(), name="test-stage")) as ahead:
        for item in ahead:
            if item == 10:
                raise KeyError("the consumer fails")
    assert closed.is_set()


def test_write_behind_writes_in_order_off_the_calling_thread():
    written, threads = [], set()

    def write(item):
        threads.add(threading.current_thread().name)
        written.append(item)

    with WriteBehind(write, depth=2, name="test-stage-write") as writer:
        for i in range(200):
            writer.put(i)
    assert written == list(range(200)) and threads == {"test-stage-write"}


def test_a_failed_write_stops_the_writer_and_reaches_the_caller():
    error = OSError(28, "No space left on device")
    written = []

    def write(item):
        if item == 3:
            raise error
        written.append(item)

    put = 0
    with pytest.raises(OSError) as info, WriteBehind(write, depth=2, name="test-stage") as writer:
        for i in range(1000):
            writer.put(i)
            put += 1
    assert info.value is error and written == [0, 1, 2]
    assert put <= 3 + 2 + 2  # the caller stops once the queue (depth 2) cannot take more


def test_a_write_failing_after_the_last_put_is_raised_on_leaving():
    def write(item):
        raise RuntimeError(f"cannot write {item}")

    with pytest.raises(RuntimeError, match="cannot write 0"), WriteBehind(write, name="test-stage") as writer:
        writer.put(0)


def test_the_callers_error_wins_and_the_queued_items_are_written():
    written = []
    with pytest.raises(KeyError), WriteBehind(written.append, name="test-stage") as writer:
        writer.put(1)
        writer.put(2)
        raise KeyError("the engine fails")
    assert written == [1, 2]


def test_three_stages_keep_order():
    written = []
    with WriteBehind(written.append, name="test-stage-write") as writer:
        for item in prefetch(iter(range(500)), depth=3, name="test-stage-read"):
            writer.put(item * 2)
    assert written == [i * 2 for i in range(500)]
