"""The one HTTP load generator: keep-alive HTTP/1.1 connections, requests encoded once. The serving benchmark
(``benchmarks/serving.py``) and the load test (``scripts/load_test.py``) both load the service with it.

The clients share the machine's cores with the server they measure, so every millisecond of CPU they spend per
request is taken from the server (on 2 cores httpx's AsyncClient cost ~2.5-5 ms of CPU per request, more than the
model's own ~2 ms per image). This client writes pre-encoded ``multipart/form-data`` requests on plain asyncio
streams and reads the status line, the headers and a ``Content-Length`` or chunked body: 0.1-0.3 ms of CPU per
request (BENCHMARKS.md, Serving). It speaks exactly the HTTP/1.1 that ``bentoml serve`` (uvicorn) answers; it is
not a general client (no redirects, no proxies).

Each client holds one connection and sends its next request as soon as the previous one is answered, so a
connection is never left idle (a server's keep-alive timeout cannot close one under it).
"""

from __future__ import annotations

import asyncio
import math
import mimetypes
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

#: Seconds a client waits after a request that got no answer: a refused connection must not become a busy loop.
FAILURE_PAUSE_S = 0.05


def multipart_request(
    host: str, path: str, files: list[tuple[str, str, bytes, str]], fields: dict[str, str] | None = None
) -> bytes:
    """The bytes of one ``POST path`` carrying ``files`` as (field, filename, data, content type) form parts, and the
    text form ``fields``."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (fields or {}).items()
    ]
    for name, filename, data, content_type in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nAccept: application/json\r\n\r\n"
    ).encode()
    return head + body


def encoded_requests(
    host: str,
    path: str,
    images: list[tuple[str, bytes]],
    per_request: int = 1,
    field: str | None = None,
    fields: dict[str, str] | None = None,
) -> list[bytes]:
    """The distinct requests of a load that cycles through ``images`` (file name, encoded bytes), ``per_request``
    images each: request ``i`` carries images ``i * per_request`` onwards (wrapping around), in the multipart field
    ``field`` (repeated); by default faceattr's: ``images`` for ``/predict_batch``, else ``image``; with the text form
    ``fields`` (e.g. ``{"face": "detect"}``)."""
    field_name = field or ("images" if path.rstrip("/").endswith("predict_batch") else "image")
    count = len(images) // math.gcd(len(images), per_request)
    requests = []
    for number in range(count):
        chosen = [images[(number * per_request + k) % len(images)] for k in range(per_request)]
        requests.append(
            multipart_request(
                host,
                path,
                [
                    (field_name, name, data, mimetypes.guess_type(name)[0] or "application/octet-stream")
                    for name, data in chosen
                ],
                fields,
            )
        )
    return requests


class ProtocolError(Exception):
    """The server's answer was not parseable HTTP/1.1."""


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise ProtocolError(f"bad status line {lines[0]!r}") from None
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunks.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(chunk[:-2] for chunk in chunks)
    else:
        body = await reader.read()
        return status, body, False
    return status, body, headers.get("connection", "").lower() != "close"


@dataclass
class LoadResult:
    """What one load measured: the latency of every request answered 200, the answers by status, the requests that
    got no answer by exception, an example of each kind of error, and the wall time."""

    latencies: list[float] = field(default_factory=list)  # seconds, requests answered 200
    statuses: Counter = field(default_factory=Counter)  # answers by HTTP status
    failures: Counter = field(default_factory=Counter)  # no answer: refused connection, timeout, bad HTTP, ...
    examples: dict[str, str] = field(default_factory=dict)  # the first body of each error status or failure message
    bodies: list[bytes] = field(default_factory=list)  # the first ``keep_bodies`` bodies answered 200
    elapsed: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.failures.values())

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def errors(self) -> dict[str, int]:
        """The requests not answered 200, by status (``"503"``) or by exception name (``"ConnectionRefusedError"``)."""
        return {**{str(status): n for status, n in self.statuses.items() if status != 200}, **self.failures}


async def run_load(
    host: str,
    port: int,
    requests_bytes: list[bytes],
    concurrency: int,
    total: int | None,
    max_seconds: float,
    keep_bodies: int = 0,
    timeout: float = 30.0,
    tls: bool = False,
) -> LoadResult:
    """Up to ``total`` requests (cycling through ``requests_bytes``; ``None``: no limit) from ``concurrency``
    connections, each sending its next request when the previous one is answered, until ``total`` are issued or
    ``max_seconds`` have passed; a request in flight then has ``timeout`` seconds to finish (each request has).
    A 200 counts its latency; any other status, and any request without an answer, is counted as an error."""
    result = LoadResult()
    issued = 0
    run_started = time.perf_counter()
    deadline = run_started + max_seconds

    async def client(offset: int) -> None:
        nonlocal issued
        reader = writer = None
        try:
            while (total is None or issued < total) and time.perf_counter() < deadline:
                index = issued
                issued += 1
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(timeout):
                        if writer is None:
                            reader, writer = await asyncio.open_connection(host, port, ssl=tls or None)
                        writer.write(requests_bytes[(index + offset) % len(requests_bytes)])
                        status, body, keep_alive = await read_response(reader)
                except (
                    OSError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                    ProtocolError,
                    ValueError,
                ) as exc:  # TimeoutError is an OSError
                    kind = type(exc).__name__
                    result.failures[kind] += 1
                    result.examples.setdefault(
                        kind,
                        f"after {time.perf_counter() - started:.2f} s, at "
                        f"{started - run_started:.1f} s of the run: {exc!r}",
                    )
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    await asyncio.sleep(FAILURE_PAUSE_S)
                    continue
                result.statuses[status] += 1
                if status == 200:
                    result.latencies.append(time.perf_counter() - started)
                    if len(result.bodies) < keep_bodies:
                        result.bodies.append(body)
                else:
                    result.examples.setdefault(str(status), body[:300].decode("utf-8", "replace"))
                if not keep_alive:
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    result.elapsed = time.perf_counter() - run_started
    return result


def run(coroutine):
    """Run ``coroutine`` to completion on uvloop (installed with the project for the server's uvicorn), else on
    asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a project dependency
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
