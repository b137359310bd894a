"""A lean HTTP/1.1 load generator for the serving benchmark: keep-alive connections, requests encoded once.

The benchmark's clients share the machine's cores with the server they measure, so every millisecond of CPU they
spend per request is taken from the server (on 2 cores httpx's AsyncClient cost ~2.5-5 ms of CPU per request, more
than the model's own ~2 ms per image). This client writes pre-encoded ``multipart/form-data`` requests on plain
asyncio streams and reads the status line, the headers and a ``Content-Length`` or chunked body: 0.1-0.3 ms of
CPU per request (BENCHMARKS.md, Serving). It speaks exactly the HTTP/1.1 that ``bentoml serve`` (uvicorn)
answers; it is not a general client (no TLS, no redirects, no proxies).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field


def multipart_request(host: str, path: str, files: list[tuple[str, str, bytes, str]]) -> bytes:
    """The bytes of one ``POST path`` carrying ``files`` as (field, filename, data, content type) form parts."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, filename, data, content_type in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nAccept: application/json\r\n\r\n"
    ).encode()
    return head + body


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
    """What one load level measured: per-request latencies of the answered requests, errors by kind, wall time."""

    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    bodies: list[bytes] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def run_load(host: str, port: int, requests_bytes: list[bytes], concurrency: int, total: int,
                   max_seconds: float, keep_bodies: int = 0) -> LoadResult:
    """``total`` requests (cycling through ``requests_bytes``) from ``concurrency`` connections, each sending its
    next request when the previous one is answered, until ``total`` are issued or ``max_seconds`` have passed.
    A 200 counts its latency; anything else (status or exception) is counted in ``errors``."""
    result = LoadResult()
    issued = 0
    deadline = time.perf_counter() + max_seconds

    async def client(offset: int) -> None:
        nonlocal issued
        reader = writer = None
        try:
            while issued < total and time.perf_counter() < deadline:
                index = issued
                issued += 1
                started = time.perf_counter()
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection(host, port)
                    writer.write(requests_bytes[(index + offset) % len(requests_bytes)])
                    status, body, keep_alive = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError) as exc:
                    result.error(type(exc).__name__)
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    continue
                if status == 200:
                    result.latencies.append(time.perf_counter() - started)
                    if len(result.bodies) < keep_bodies:
                        result.bodies.append(body)
                else:
                    result.error(str(status))
                if not keep_alive:
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    result.elapsed = time.perf_counter() - started
    return result


def run(coroutine):
    """Run ``coroutine`` to completion on uvloop (installed with the project for the server's uvicorn), else on
    asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a project dependency
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
