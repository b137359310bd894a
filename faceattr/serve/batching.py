"""Adaptive batching of the model inside the API process (``runner: inline``, the default).

Concurrent requests of one API process wait in a queue; whenever the model is idle it takes everything waiting
(at most ``max_batch_size`` images) as one batch. Under light load a request runs at once, alone (no waiting for a
batch to fill); under heavy load the batch grows to what arrived while the previous one ran, so the model never
idles while requests wait. A request whose predicted wait (images queued ahead of it x the measured seconds per
image) exceeds ``max_latency_ms`` is refused at once (:class:`Overloaded`, answered 503) instead of queueing.

Why not BentoML's batching here: BentoML batches a ``batchable`` endpoint where that endpoint is served over
HTTP, so the API would call the model through a second HTTP hop per image (serialization, request handling in the
model process), which on a CPU costs more than a small model's forward pass (BENCHMARKS.md, Serving). Its
dispatcher (``CorkDispatcher``) is also private API, and its wait heuristic, learned from recent batches, keeps
lone requests waiting ~100 ms for companions for a long while after a burst (measured: a single client fell
from 83 to 12 img/s after a concurrency-32 run). ``runner: service`` still gives the BentoML two-service setup.

The model runs on one dedicated thread: one batch at a time, and one thread team for the runtime (onnxruntime's, or
torch's OpenMP) instead of one per thread of a pool.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

#: The model thread's name, also given to the OS thread (``/proc/<pid>/task/<tid>/comm``, ``top -H``): the threads
#: the model starts there (torch's OpenMP team) inherit it, so the model's CPU time can be told apart.
MODEL_THREAD = "faceattr-model"


def _name_os_thread(name: str) -> None:
    """Name the calling OS thread (Linux ``prctl(PR_SET_NAME)``, 15 characters); elsewhere nothing."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Overloaded(Exception):
    """A request refused because it would wait longer than ``max_latency_ms`` for the model."""


@dataclass
class _Request:
    images: np.ndarray
    future: asyncio.Future


class InlineBatcher:
    """``await batcher(images)``: uint8 ``(n, 3, h, w)`` -> float32 ``(n, A)``, computed within a merged batch.

    ``load_model()`` runs once on the model thread (so that the model is loaded, warmed up and its thread settings
    made where it will run) and returns the function that ``predict``s a batch there, the concatenated images of
    the waiting requests. A request is never split between batches; one larger than ``max_batch_size`` runs in
    chunks of that size. ``observe(images, seconds)`` is called after each model call (metrics).
    """

    def __init__(
        self,
        load_model: Callable[[], Callable[[np.ndarray], np.ndarray]],
        max_batch_size: int,
        max_latency_ms: float,
        observe: Callable[[int, float], None] | None = None,
    ) -> None:
        self._observe = observe
        self.max_batch_size = int(max_batch_size)
        self.max_latency_s = float(max_latency_ms) / 1000.0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=MODEL_THREAD)
        self._thread.submit(_name_os_thread, MODEL_THREAD).result()
        self._predict = self._thread.submit(load_model).result()
        self._queue: deque[_Request] = deque()
        self._queued_images = 0
        self._running_images = 0
        self._worker: asyncio.Task | None = None
        #: Seconds per image of recent model calls (exponential moving average; 0 until the first call).
        self.seconds_per_image = 0.0

    def predicted_wait_s(self, images: int) -> float:
        """Seconds until a request of ``images`` images, queued now, would have its answer."""
        return (self._running_images + self._queued_images + images) * self.seconds_per_image

    async def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.predicted_wait_s(len(images)) > self.max_latency_s:
            raise Overloaded(
                f"the model is overloaded ({self._queued_images + self._running_images} images ahead, about "
                f"{self.predicted_wait_s(len(images)):.1f} s > max_latency_ms={self.max_latency_s * 1000:.0f}); "
                "retry shortly"
            )
        loop = asyncio.get_running_loop()
        request = _Request(images, loop.create_future())
        self._queue.append(request)
        self._queued_images += len(images)
        if self._worker is None:
            self._worker = loop.create_task(self._drain())
        return await request.future

    def _next_batch(self) -> list[_Request]:
        batch: list[_Request] = []
        size = 0
        while self._queue:
            request = self._queue[0]
            if batch and size + len(request.images) > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_images -= len(request.images)
            if request.future.done():  # its client went away (cancelled): no need to compute it
                continue
            batch.append(request)
            size += len(request.images)
        return batch

    def _timed(self, images: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        chunks = [
            self._predict(images[i : i + self.max_batch_size]) for i in range(0, len(images), self.max_batch_size)
        ]
        seconds = time.perf_counter() - started
        if self._observe is not None:
            self._observe(len(images), seconds)
        per_image = seconds / max(1, len(images))
        self.seconds_per_image = (
            per_image if self.seconds_per_image == 0 else (0.8 * self.seconds_per_image + 0.2 * per_image)
        )
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch = self._next_batch()
                if not batch:
                    continue
                images = batch[0].images if len(batch) == 1 else np.concatenate([r.images for r in batch])
                self._running_images = len(images)
                try:
                    probabilities = await loop.run_in_executor(self._thread, self._timed, images)
                except Exception as exc:  # noqa: BLE001 - the model failed: every request of the batch learns why
                    for request in batch:
                        if not request.future.done():
                            request.future.set_exception(exc)
                    continue
                finally:
                    self._running_images = 0
                start = 0
                for request in batch:
                    end = start + len(request.images)
                    if not request.future.done():
                        request.future.set_result(probabilities[start:end])
                    start = end
        finally:
            self._worker = None

    def close(self) -> None:
        for request in self._queue:
            request.future.cancel()
        self._queue.clear()
        self._thread.shutdown(wait=False, cancel_futures=True)
