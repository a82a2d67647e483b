"""The delivery seam: send one request within a deadline, say what happened.

``Sender.send`` never raises for anything the network or the target does: it
returns a ``Response`` (status, headers, at most 64 KiB of body) or a
``Failure`` with a ``FailureKind``; the ``Request`` it takes is the core's
(``app.core.request`` builds it) and is named here too, as the seam's
argument. ``AiohttpSender`` is the real one (one shared session, no redirects,
the whole attempt under one hard deadline); tests put a fake behind the same
protocol. Unless private targets are allowed, it holds every connection to the
address policy itself (``app.net``): names are resolved through a
``GuardedResolver`` and IP-literal hosts are judged before any connection, so
a ``private_address`` failure is all a private address gets. Errors are sorted
into kinds by what aiohttp raised (``failure_from``); a ``Failure``'s
``message`` keeps the full detail (URL, host, address) for the log, and
producers only ever see the kind.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict
from yarl import URL

from app.core.outcome import FailureKind
from app.core.request import Request as Request
from app.net import GuardedResolver, RefusedAddress, literal_refusal

MAX_RESPONSE_BYTES = 64 * 1024
#: idle connections to targets are closed after this long
KEEPALIVE_S = 5.0
#: URLs whose literal-host verdict is remembered; past this the memory starts over
VERDICT_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    kind: FailureKind
    #: what went wrong in full, URL and addresses included: for the log only
    message: str


class Sender(Protocol):
    async def send(self, request: Request) -> Response | Failure: ...
    async def close(self) -> None: ...


class AiohttpSender:
    """``allow_private`` turns the connect-time address check off;
    ``resolver`` replaces aiohttp's default resolver (tests script DNS with it)."""

    def __init__(
        self,
        *,
        max_connections: int,
        allow_private: bool = False,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._allow_private = allow_private
        self._inner_resolver = resolver
        self._resolver: AbstractResolver | None = None
        self._session: aiohttp.ClientSession | None = None
        #: request URL -> the failure its IP-literal host earns, or None if it may go
        self._verdicts: dict[str, Failure | None] = {}

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self._allow_private:
                self._resolver = self._inner_resolver
            else:
                # aiohttp's default resolver needs the running loop: made here
                inner = self._inner_resolver or aiohttp.DefaultResolver()
                self._resolver = GuardedResolver(inner)
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                ttl_dns_cache=10,
                keepalive_timeout=KEEPALIVE_S,
                resolver=self._resolver,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        resolver, self._resolver = self._resolver, None
        if session is not None:
            await session.close()
        if resolver is not None:
            # a resolver handed to the connector is not the connector's to close
            await resolver.close()

    def _literal_verdict(self, url: str) -> Failure | None:
        """The verdict on ``url``'s host if it is an IP literal, remembered per
        URL: a target's URL is the same string delivery after delivery, so this
        costs a dict lookup, not a parse."""
        try:
            return self._verdicts[url]
        except KeyError:
            pass
        try:
            host = URL(url).raw_host
        except ValueError:
            host = None  # aiohttp refuses it the same way, as a protocol failure
        why = literal_refusal(host) if host else None
        verdict = None if why is None else Failure(kind=FailureKind.PRIVATE_ADDRESS, message=why)
        if len(self._verdicts) >= VERDICT_CACHE_SIZE:
            self._verdicts.clear()
        self._verdicts[url] = verdict
        return verdict

    async def send(self, request: Request) -> Response | Failure:
        if not self._allow_private:
            refused = self._literal_verdict(request.url)
            if refused is not None:
                return refused
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
                message=f"{request.url}: no complete answer within {request.timeout_s:g}s",
            )
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return failure_from(exc, request.url)


def failure_from(exc: aiohttp.ClientError | OSError | ValueError, url: str) -> Failure:
    """The kind of failure aiohttp's ``exc`` stands for, with the URL and the
    exception's text for the log.

    The order matters: aiohttp's TLS errors are connector errors, and its
    connector errors are ``OSError``s."""
    message = f"{url}: {type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError | ssl.CertificateError):
        return Failure(kind=FailureKind.TLS, message=message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        # what the resolver raised arrives wrapped, as a DNS error
        cause = exc.os_error
        if isinstance(cause, RefusedAddress):
            return Failure(kind=FailureKind.PRIVATE_ADDRESS, message=str(cause))
        if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(cause, socket.gaierror):
            return Failure(kind=FailureKind.DNS, message=message)
        if isinstance(cause, ConnectionResetError | ConnectionAbortedError):
            # accepted, then dropped during the TLS handshake
            return Failure(kind=FailureKind.CONNECTION_RESET, message=message)
        # refused, or no route: either way nothing answered at that address
        return Failure(kind=FailureKind.CONNECTION_REFUSED, message=message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | OSError):
        # the connection was made, then closed or broken before the answer was whole
        return Failure(kind=FailureKind.CONNECTION_RESET, message=message)
    # a status line or headers that are not HTTP, a body cut short or badly
    # framed (ClientResponseError, ClientPayloadError), or a URL aiohttp refuses
    return Failure(kind=FailureKind.INVALID_RESPONSE, message=message)


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
