"""The server's micro-batcher without a model: requests batched together, in order, and with workers > 1 (a
predictor with streams) as many batches scored at once."""

import asyncio
import threading

import pytest

from finsent.apps.batcher import MicroBatcher


def run(batcher: MicroBatcher, requests: list[list[str]]) -> list[list[dict]]:
    async def main():
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(texts) for texts in requests))
        finally:
            await batcher.stop()

    return asyncio.run(main())


def echo(texts: list[str]) -> list[dict]:
    return [{"label": t} for t in texts]


def test_each_request_gets_its_own_answers_in_order():
    requests = [[f"r{i}-{k}" for k in range(1 + i % 3)] for i in range(20)]
    batcher = MicroBatcher(echo, max_batch_texts=8, max_wait_ms=5)
    answers = run(batcher, requests)
    assert [[a["label"] for a in answer] for answer in answers] == requests
    assert batcher.requests == 20 and batcher.batches < 20  # batched together, never above max_batch_texts


@pytest.mark.parametrize("workers", [1, 2])
def test_two_workers_score_two_batches_at_once(workers):
    both = threading.Barrier(2, timeout=2)  # passes only when two batches are inside score() together

    def score(texts: list[str]) -> list[dict]:
        both.wait()
        return echo(texts)

    batcher = MicroBatcher(score, max_batch_texts=1, max_wait_ms=0, workers=workers)
    if workers == 1:
        with pytest.raises(threading.BrokenBarrierError):  # one batch at a time: the barrier never fills
            run(batcher, [["a"], ["b"]])
    else:
        assert run(batcher, [["a"], ["b"]]) == [[{"label": "a"}], [{"label": "b"}]]
        assert batcher.batches == 2


def test_a_failing_batch_fails_its_requests_and_frees_its_worker():
    calls = []

    def score(texts: list[str]) -> list[dict]:
        calls.append(texts)
        if len(calls) == 1:
            raise RuntimeError("engine failed")
        return echo(texts)

    async def main():
        batcher = MicroBatcher(score, max_batch_texts=1, max_wait_ms=0, workers=1)
        await batcher.start()
        try:
            first = await asyncio.gather(batcher.submit(["a"]), return_exceptions=True)
            second = await asyncio.wait_for(batcher.submit(["b"]), timeout=5)  # the worker was released
            return first, second
        finally:
            await batcher.stop()

    first, second = asyncio.run(main())
    assert isinstance(first[0], RuntimeError) and second == [{"label": "b"}]


def first_batch_waits(release: threading.Event, sizes: list[int]):
    """A score function that records each batch's size and keeps the first one until release is set."""

    def score(texts: list[str]) -> list[dict]:
        sizes.append(len(texts))
        if len(sizes) == 1:
            assert release.wait(timeout=10)
        return echo(texts)

    return score


def test_a_free_worker_holds_a_small_batch_while_a_bigger_one_is_scored():
    """Clients that wait for answers come back one by one: the second worker waits (up to balance_ms) until its batch
    is as big as the one being scored, and no longer than that; with nothing else scoring, nothing waits."""
    first_done = threading.Event()
    sizes: list[int] = []

    async def main():
        batcher = MicroBatcher(first_batch_waits(first_done, sizes), max_wait_ms=0, workers=2, balance_ms=5000)
        await batcher.start()
        try:
            first = [asyncio.ensure_future(batcher.submit([f"a{i}"])) for i in range(4)]
            await asyncio.sleep(0.05)  # the four are being scored together, and stay there
            second = []
            for i in range(4):
                second.append(asyncio.ensure_future(batcher.submit([f"b{i}"])))
                await asyncio.sleep(0.02)
            answered = await asyncio.wait_for(asyncio.gather(*second), timeout=5)  # before the first batch ends
            assert sizes == [4, 4] and not any(f.done() for f in first)
            first_done.set()
            await asyncio.gather(*first)
            return answered
        finally:
            first_done.set()
            await batcher.stop()

    assert asyncio.run(main()) == [[{"label": f"b{i}"}] for i in range(4)]


def test_the_hold_ends_at_balance_ms_and_never_delays_a_lone_request():
    release = threading.Event()
    sizes: list[int] = []

    async def main():
        batcher = MicroBatcher(first_batch_waits(release, sizes), max_wait_ms=0, workers=2, balance_ms=500)
        await batcher.start()
        try:
            big = asyncio.ensure_future(batcher.submit(["a", "b", "c"]))
            await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            started = loop.time()
            lone = await asyncio.wait_for(batcher.submit(["d"]), timeout=5)  # held 500 ms, then scored alone
            held = loop.time() - started
            release.set()
            await big
            started = loop.time()
            await batcher.submit(["e"])  # nothing being scored: no hold
            return lone, held, loop.time() - started
        finally:
            release.set()
            await batcher.stop()

    lone, held, idle = asyncio.run(main())
    assert lone == [{"label": "d"}] and sizes == [3, 1, 1]
    assert 0.45 <= held < 3 and idle < 0.25
