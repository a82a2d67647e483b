"""The delivery seam: send one request within a deadline, say what happened.

``Sender.send`` never raises for anything the network or the target does: it
returns a ``Response`` (status, headers, at most 64 KiB of body) or a
``Failure`` with a ``FailureKind``. ``AiohttpSender`` is the real one (one
shared session, no redirects, the whole attempt under one hard deadline);
tests put a fake behind the same protocol.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from multidict import CIMultiDict

from app import __version__
from app.core.outcome import FailureKind

MAX_RESPONSE_BYTES = 64 * 1024
#: idle connections to targets are closed after this long
KEEPALIVE_S = 5.0
USER_AGENT = f"csjd/{__version__}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    url: str
    body: bytes
    headers: Mapping[str, str]
    timeout_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    kind: FailureKind
    message: str


class Sender(Protocol):
    async def send(self, request: Request) -> Response | Failure: ...
    async def close(self) -> None: ...


class AiohttpSender:
    def __init__(self, *, max_connections: int) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                ttl_dns_cache=10,
                keepalive_timeout=KEEPALIVE_S,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, request: Request) -> Response | Failure:
        session = self._open()
        try:
            async with asyncio.timeout(request.timeout_s):
                async with session.post(
                    request.url,
                    data=request.body,
                    headers=_with_defaults(request.headers),
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=None),
                ) as response:
                    body = await _read_capped(response)
                    # the headers as received, looked up without regard to case
                    return Response(status=response.status, headers=response.headers, body=body)
        except TimeoutError:
            return Failure(
                kind=FailureKind.TIMEOUT,
                message=f"no complete answer within {request.timeout_s:g}s",
            )
        except aiohttp.ClientConnectorDNSError as exc:
            return Failure(kind=FailureKind.DNS, message=str(exc))
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, socket.gaierror):
                return Failure(kind=FailureKind.DNS, message=str(exc))
            return Failure(kind=FailureKind.CONNECT, message=str(exc))
        except (aiohttp.ClientError, ValueError) as exc:
            return Failure(kind=FailureKind.PROTOCOL, message=f"{type(exc).__name__}: {exc}")
        except OSError as exc:
            return Failure(kind=FailureKind.CONNECT, message=str(exc))


def _with_defaults(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """The request's headers, plus what csjd always says: that it wants the answer
    uncompressed (the excerpt it keeps is text) and any media type. Sent
    explicitly, aiohttp adds no defaults of its own (skipping them costs a copy
    per request)."""
    out = CIMultiDict(headers)
    if "accept-encoding" not in out:
        out["accept-encoding"] = "identity"
    if "accept" not in out:
        out["accept"] = "*/*"
    return out


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_RESPONSE_BYTES:
        chunk = await response.content.read(MAX_RESPONSE_BYTES - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
