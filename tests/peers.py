"""Misbehaving peers on real local sockets, for the sender's failure tests.

Each ``Peer`` is an asyncio server in the test's own event loop that does one
wrong thing with every connection: resets it, closes it without a word,
answers bytes that are not HTTP, or never answers. ``closed_port`` is a port
nothing listens on.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _request_read(reader: asyncio.StreamReader) -> None:
    # the request's head is enough: what matters is what comes back
    await reader.readuntil(b"\r\n\r\n")


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, then reset the connection (an RST, not a FIN)."""
    await _request_read(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, then close the connection without answering."""
    await _request_read(reader)
    writer.close()


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer what some other protocol's server would say first."""
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
    await writer.drain()
    await _request_read(reader)
    writer.close()


async def silence(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept the request and never answer (until the client gives up)."""
    await reader.read()
    writer.close()


@asynccontextmanager
async def peer(handler: Handler) -> AsyncIterator[int]:
    """A server on 127.0.0.1 running ``handler`` for every connection; yields its port."""
    tasks: set[asyncio.Task[None]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up first
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
