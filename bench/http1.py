"""A lean HTTP/1.1 client and server for the benchmark's load generator and sink.

The benchmark measures csjd, so what drives it and what answers it must cost
as little CPU as possible on a machine whose two cores they share with csjd:
an aiohttp client spent about 300 µs per POST and an aiohttp server about
240 µs per delivery here, a quarter of the whole budget. This module speaks
just enough HTTP/1.1 over asyncio protocols with httptools' C parser (already
installed with ``uvicorn[standard]``): keep-alive connections with one request
in flight each, ``Content-Length`` bodies. It is bench code, not a general
HTTP stack: no TLS, no chunked request bodies, no pipelining.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools


class ConnectionClosed(ConnectionError):
    """The server closed the connection before the answer was complete."""


class _ClientProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionClosed("connection closed"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionClosed(f"bad answer: {exc}"))
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()


class Client:
    """One keep-alive connection per host, one request at a time (one per worker)."""

    def __init__(self) -> None:
        self._conns: dict[tuple[str, int], _ClientProtocol] = {}

    async def _conn(self, host: str, port: int) -> _ClientProtocol:
        conn = self._conns.get((host, port))
        if conn is None or not conn.open:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(_ClientProtocol, host, port)
            self._conns[(host, port)] = conn
        return conn

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """(status, body) of one POST; ``ConnectionError``/``OSError`` if it could not be had."""
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        conn = await self._conn(host, port)
        head = [f"POST {parts.path or '/'} HTTP/1.1", f"host: {host}:{port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"content-length: {len(body)}")
        conn.waiter = asyncio.get_running_loop().create_future()
        assert conn.transport is not None
        conn.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        try:
            return await conn.waiter
        finally:
            conn.waiter = None

    def close(self) -> None:
        for conn in self._conns.values():
            if conn.transport is not None:
                conn.transport.close()
        self._conns.clear()


#: (method, path with query, headers with lower-case names, body) -> (status, content type, body)
Handler = Callable[[str, str, dict[str, str], bytes], tuple[int, str, bytes]]

_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found"}


class _ServerProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        status, media, body = self.handler(
            method, self.url.decode("latin-1"), self.headers, b"".join(self.body)
        )
        keep = self.parser.should_keep_alive()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
            f"content-type: {media}\r\ncontent-length: {len(body)}\r\n"
            f"connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        )
        if self.transport is not None:
            self.transport.write(head.encode() + body)
            if not keep:
                self.transport.close()


async def serve(handler: Handler, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _ServerProtocol(handler), host, port, backlog=1024)
