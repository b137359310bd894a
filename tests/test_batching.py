"""The in-process adaptive batching of the service (faceattr/serve/batching.py), with a stand-in model: fast, no
server. The served behaviour (real model, HTTP) is in test_serve_api.py."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from faceattr.serve.batching import InlineBatcher, Overloaded


class FakeModel:
    """Row i of the output is the mean pixel of image i (so results can be traced back to their inputs); records
    the batch sizes it saw and the thread it ran on; each call takes ``delay`` seconds."""

    def __init__(self, delay: float = 0.02, fail_on: int | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.batches: list[int] = []
        self.threads: set[str] = set()

    def load(self):
        self.loaded_on = threading.current_thread().name
        return self.predict

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.batches.append(len(images))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in images[:, 0, 0, 0]:
            raise RuntimeError("model exploded")
        return images.reshape(len(images), -1).mean(axis=1, keepdims=True).astype(np.float32)


def images(value: int, n: int = 1) -> np.ndarray:
    return np.full((n, 3, 4, 4), value, dtype=np.uint8)


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    model = FakeModel()
    seen: list[tuple[int, float]] = []
    batcher = InlineBatcher(
        model.load, max_batch_size=8, max_latency_ms=10_000, observe=lambda n, s: seen.append((n, s))
    )

    async def main():
        return await asyncio.gather(*(batcher(images(v)) for v in range(20)))

    results = asyncio.run(main())
    assert [float(r[0, 0]) for r in results] == list(range(20))  # every request got its own image's row
    assert model.batches == [8, 8, 4]  # all 20 were waiting: merged, at most max_batch_size per call
    assert model.threads == {model.loaded_on} and model.loaded_on.startswith("faceattr-model")
    assert [n for n, _ in seen] == model.batches and all(s >= 0.02 for _, s in seen)
    batcher.close()


def test_a_lone_request_runs_at_once_and_later_ones_join_the_next_batch():
    model = FakeModel(delay=0.05)
    batcher = InlineBatcher(model.load, max_batch_size=32, max_latency_ms=10_000)

    async def main():
        first = asyncio.ensure_future(batcher(images(0)))
        await asyncio.sleep(0.01)  # the first one is running alone: no waiting for a batch to fill
        later = [asyncio.ensure_future(batcher(images(v))) for v in range(1, 6)]
        return await first, await asyncio.gather(*later)

    first, later = asyncio.run(main())
    assert model.batches == [1, 5] and float(first[0, 0]) == 0.0 and [float(r[0, 0]) for r in later] == [1, 2, 3, 4, 5]
    batcher.close()


def test_requests_are_not_split_and_large_ones_run_in_chunks():
    model = FakeModel(delay=0.01)
    batcher = InlineBatcher(model.load, max_batch_size=4, max_latency_ms=10_000)

    async def main():
        return await asyncio.gather(batcher(images(1, 3)), batcher(images(2, 3)), batcher(images(3, 10)))

    small, other, large = asyncio.run(main())
    assert small.shape == (3, 1) and other.shape == (3, 1) and large.shape == (10, 1)
    assert set(large[:, 0]) == {3.0} and set(other[:, 0]) == {2.0}
    # 3 (alone: first), 3 (would not fit with the 10), then the 10-image request in chunks of 4, 4 and 2.
    assert model.batches == [3, 3, 4, 4, 2]
    batcher.close()


def test_a_request_predicted_to_wait_too_long_is_refused_at_once():
    model = FakeModel(delay=0.05)  # 50 ms per call
    batcher = InlineBatcher(model.load, max_batch_size=1, max_latency_ms=200)

    async def main():
        await batcher(images(0))  # measures ~50 ms per image
        assert batcher.seconds_per_image >= 0.05
        outcomes = await asyncio.gather(*(batcher(images(v)) for v in range(10)), return_exceptions=True)
        return outcomes, await batcher(images(99))

    outcomes, after = asyncio.run(main())
    refused = [o for o in outcomes if isinstance(o, Overloaded)]
    served = [o for o in outcomes if isinstance(o, np.ndarray)]
    assert 1 <= len(served) <= 4 and len(refused) == 10 - len(served)  # ~200 ms of queue, then 503s
    assert "max_latency_ms=200" in str(refused[0])
    assert float(after[0, 0]) == 99.0  # and it serves again once the queue has drained
    batcher.close()


def test_a_model_error_reaches_the_requests_of_its_batch_only():
    model = FakeModel(delay=0.02, fail_on=7)
    batcher = InlineBatcher(model.load, max_batch_size=2, max_latency_ms=10_000)

    async def main():
        first = asyncio.ensure_future(batcher(images(0)))
        await asyncio.sleep(0)
        rest = await asyncio.gather(batcher(images(7)), batcher(images(8)), batcher(images(9)), return_exceptions=True)
        return await first, rest

    first, (bad, neighbour, later) = asyncio.run(main())
    assert float(first[0, 0]) == 0.0
    assert isinstance(bad, RuntimeError) and isinstance(neighbour, RuntimeError)  # 7 and 8 were one batch
    assert float(later[0, 0]) == 9.0
    batcher.close()


def test_a_cancelled_request_is_not_computed():
    model = FakeModel(delay=0.05)
    batcher = InlineBatcher(model.load, max_batch_size=8, max_latency_ms=10_000)

    async def main():
        running = asyncio.ensure_future(batcher(images(1)))
        await asyncio.sleep(0.01)  # the model is busy with it
        gone = asyncio.ensure_future(batcher(images(2)))
        kept = asyncio.ensure_future(batcher(images(3)))
        await asyncio.sleep(0)
        gone.cancel()  # its client disconnected while it waited
        return await running, await kept

    first, kept = asyncio.run(main())
    assert float(first[0, 0]) == 1.0 and float(kept[0, 0]) == 3.0
    assert model.batches == [1, 1]  # the cancelled image never reached the model
    batcher.close()


def test_loading_errors_surface_at_construction():
    def broken():
        raise FileNotFoundError("model.pt")

    with pytest.raises(FileNotFoundError, match="model.pt"):
        InlineBatcher(broken, max_batch_size=2, max_latency_ms=100)


def test_runner_and_access_log_settings_and_the_gpu_preset():
    from faceattr.serve.config import ServeConfigError, load_serve_config

    default = load_serve_config({})
    assert (default.format, default.runner, default.access_log) == ("auto", "inline", False)
    assert (default.api_workers, default.num_threads) == (None, None)
    # null workers/threads: one worker per core (at most 4), the cores shared out as model threads; explicit wins.
    assert [
        (c.api_workers, c.num_threads, c.decode_threads)
        for c in (
            default.for_device("cpu", cores=2),
            default.for_device("cpu", cores=16),
            default.for_device("cuda", cores=16),
        )
    ] == [(2, 1, 2), (4, 4, 5), (1, None, 17)]
    explicit = load_serve_config({"FACEATTR_SERVE_API_WORKERS": "3", "FACEATTR_SERVE_NUM_THREADS": "2"})
    assert (explicit.for_device("cpu", cores=2).api_workers, explicit.for_device("cpu", cores=2).num_threads) == (3, 2)
    service = load_serve_config({"FACEATTR_SERVE_RUNNER": "service"}).for_device("cpu", cores=8)
    assert (service.api_workers, service.num_threads) == (1, None)
    gpu = load_serve_config({"FACEATTR_SERVE_CONFIG": "gpu"})
    assert (gpu.runner, gpu.device, gpu.max_batch_size) == ("service", "cuda", 128)
    assert load_serve_config({"FACEATTR_SERVE_ACCESS_LOG": "true"}).access_log is True
    with pytest.raises(ServeConfigError, match="runner='remote' .*expected one of inline, service"):
        load_serve_config({"FACEATTR_SERVE_RUNNER": "remote"})
    assert load_serve_config({"FACEATTR_SERVE_DECODE_THREADS": "3"}).for_device("cpu", cores=2).decode_threads == 3
    with pytest.raises(ServeConfigError, match="api_workers=0 .*must be null or at least 1"):
        load_serve_config({"FACEATTR_SERVE_API_WORKERS": "0"})
    with pytest.raises(ServeConfigError, match="access_log='yes please' .*expected true or false"):
        load_serve_config({"FACEATTR_SERVE_ACCESS_LOG": "yes please"})
