"""The server's micro-batcher without a model: requests batched together, in order, and with workers > 1 (a
predictor with streams) as many batches scored at once."""

import asyncio
import threading

import pytest

from finsent.apps.server import MicroBatcher


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
