"""Hostile webhook targets on real sockets, below HTTP libraries that would tidy them up.

``HostileTarget(behaviour)`` listens on 127.0.0.1 in a thread of its own, reads
each request's head and body, records it (path and headers, so deliveries can
be counted per ``webhook-id``), then misbehaves:

- ``BINARY``: a well-formed HTTP answer (status of choice) whose body is
  binary, NUL bytes and invalid UTF-8 included, as ``application/octet-stream``;
- ``GARBAGE``: random bytes that are not HTTP at all, then the connection closes;
- ``HANG``: nothing, ever; the connection stays open until the target stops.

Each connection carries one request and is then closed, so the count of
requests is also the count of connections that got that far.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus

#: NUL bytes, bytes that are never UTF-8, and a little text between them
BINARY_BODY = b"\x00\xff\xfe\x00binary\x00answer\xc3\x28\x80" + bytes(range(256))
_HEAD_LIMIT = 64 * 1024
_READ_TIMEOUT_S = 10.0


class Behaviour(StrEnum):
    BINARY = "binary"
    GARBAGE = "garbage"
    HANG = "hang"


@dataclass(frozen=True, slots=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class HostileTarget:
    """Use as a context manager; ``url()`` is where to point a target."""

    def __init__(
        self,
        behaviour: Behaviour,
        *,
        status: int = 200,
        body: bytes = BINARY_BODY,
        content_type: str = "application/octet-stream",
        seed: int = 0,
    ) -> None:
        self.behaviour = behaviour
        self.status = status
        self.body = body
        self.content_type = content_type
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self.connections = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # -- what it saw ---------------------------------------------------------------------

    def received(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def counts(self) -> Counter[str]:
        """Requests per ``webhook-id`` (``""`` for requests without one)."""
        return Counter(seen.headers.get("webhook-id", "") for seen in self.received())

    def wait_for(self, predicate: Callable[[list[Seen]], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.received()):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the {self.behaviour} target saw {len(self.received())} requests; "
                    "the condition never held"
                )
            time.sleep(0.01)

    # -- serving -------------------------------------------------------------------------

    async def _read_request(self, reader: asyncio.StreamReader) -> Seen | None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _version = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, ConnectionError):
            return None
        return Seen(method=method, path=path, headers=headers, body=body, at=time.time())

    def _answer(self) -> bytes:
        if self.behaviour is Behaviour.BINARY:
            reason = HTTPStatus(self.status).phrase
            head = (
                f"HTTP/1.1 {self.status} {reason}\r\n"
                f"Content-Type: {self.content_type}\r\n"
                f"Content-Length: {len(self.body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            return head.encode("latin-1") + self.body
        # starts with bytes no HTTP status line can start with, then noise
        with self._lock:
            noise = self._rng.randbytes(509)
        return b"\x00\xff\xfe" + noise

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._stop is not None
        self._writers.add(writer)
        with self._lock:
            self.connections += 1
        try:
            seen = await self._read_request(reader)
            if seen is not None:
                with self._lock:
                    self._seen.append(seen)
            if self.behaviour is Behaviour.HANG:
                await self._stop.wait()
                return
            writer.write(self._answer())
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def __enter__(self) -> HostileTarget:
        ready = threading.Event()

        def run() -> None:
            # asyncio.run cancels the handlers still hanging when the target stops
            asyncio.run(self._serve(ready))

        self._thread = threading.Thread(target=run, name=f"csjd-{self.behaviour}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the hostile target did not start")
        return self

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=_HEAD_LIMIT)
        self.port = int(server.sockets[0].getsockname()[1])
        ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for writer in list(self._writers):
                writer.close()
            # handlers see the stop too; give them a moment to close their sockets
            await asyncio.sleep(0)

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
