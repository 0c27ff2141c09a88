"""The server's micro-batcher: concurrent requests queued and scored together in shared forward passes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

MAX_BATCH_TEXTS = 256
MAX_WAIT_MS = 0.0  # longer waits for company lost requests/s on both CPUs measured (docs/benchmarks/serving.md)
BALANCE_MS = 10.0


class MicroBatcher:
    """Queue concurrent requests (waiting max_wait_ms for company where the queue is empty), score them in one call on
    a worker thread; with workers > 1 (a predictor with that many streams) as many batches are scored at once.

    With several workers, a free one holds its batch (up to balance_ms) while it is smaller than what the busy ones are
    scoring: clients that wait for their answers come back in a burst when a batch ends, and taking the first of them
    alone splits the load into ever smaller batches, which an engine scores less efficiently.
    """

    def __init__(
        self,
        score: Callable[[list[str]], list[dict]],
        max_batch_texts: int = MAX_BATCH_TEXTS,
        max_wait_ms: float = MAX_WAIT_MS,
        on_batch: Callable[[int], None] | None = None,
        workers: int = 1,
        balance_ms: float = BALANCE_MS,
    ):
        self.score = score
        self.max_batch_texts = max_batch_texts
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch  # told the number of texts of each forward pass
        self.workers = workers
        self.balance = balance_ms / 1000
        self.requests = 0
        self.batches = 0
        self._scoring = 0  # texts in the batches being scored now
        self._arrived: asyncio.Event | None = None  # set by each submit
        self._queue: asyncio.Queue | None = None
        self._slots: asyncio.Semaphore | None = None  # free workers
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(self.workers)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="finsent-inference")
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        for task in (self._task, *self._running):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def queued(self) -> int:
        """Requests waiting for a forward pass."""
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, texts: list[str]) -> list[dict]:
        """Score texts together with whatever other requests arrive meanwhile."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((texts, future))
        self._arrived.set()
        return await future

    async def _loop(self) -> None:
        carry = None
        while True:
            first = carry or await self._queue.get()
            carry = None
            await self._slots.acquire()  # a free worker; requests queue up meanwhile and join this batch
            if self._queue.empty() and self.max_wait > 0:
                await asyncio.sleep(self.max_wait)
            batch, n = [first], len(first[0])
            deadline = asyncio.get_running_loop().time() + self.balance
            while True:
                while not self._queue.empty() and n < self.max_batch_texts:
                    item = self._queue.get_nowait()
                    if n + len(item[0]) > self.max_batch_texts:
                        carry = item
                        break
                    batch.append(item)
                    n += len(item[0])
                full = carry is not None or n >= min(self._scoring, self.max_batch_texts)
                if full or not await self._next_arrival(deadline):
                    break
            batch = [(texts, fut) for texts, fut in batch if not fut.cancelled()]
            if not batch:
                self._slots.release()
                continue
            n = sum(len(texts) for texts, _ in batch)
            self._scoring += n
            task = asyncio.create_task(self._run(batch, n))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_arrival(self, deadline: float) -> bool:
        """Wait for the next request until the deadline (loop time); False when none came."""
        self._arrived.clear()
        timeout = deadline - asyncio.get_running_loop().time()
        if timeout <= 0:
            return False
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _run(self, batch: list[tuple[list[str], asyncio.Future]], n: int) -> None:
        """Score one batch of n texts on a worker thread and answer its requests; frees the worker."""
        try:
            texts = [t for ts, _ in batch for t in ts]
            try:
                results = await asyncio.get_running_loop().run_in_executor(self._executor, self.score, texts)
            except Exception as e:  # noqa: BLE001 - handed to the waiting requests
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                return
            self.batches += 1
            self.requests += len(batch)
            if self.on_batch is not None:
                self.on_batch(len(texts))
            start = 0
            for ts, fut in batch:
                if not fut.done():
                    fut.set_result(results[start : start + len(ts)])
                start += len(ts)
        finally:
            self._scoring -= n
            self._slots.release()
