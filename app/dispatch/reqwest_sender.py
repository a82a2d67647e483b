"""The delivery seam on pyreqwest (Rust's reqwest and hyper): the same promise as
``AiohttpSender``, at about a third of the CPU per request.

``ReqwestSender.send`` never raises for anything the network or the target
does; it returns the seam's ``Response`` or ``Failure`` (``app.dispatch.sender``).
reqwest takes no resolver, so the connect-time address guard has another
shape here: csjd resolves each host name itself, through a ``GuardedResolver``
unless private targets are allowed, and gives every name a client of its own
with the checked address pinned (reqwest's static resolution: Host, SNI and the
certificate still go by the name). The pin is resolved again after
``PIN_TTL_S``; a name that now resolves elsewhere gets a new client, one that
now resolves only to private addresses gets ``private_address``. IP-literal
hosts share one client and are judged as reqwest parsed them (``0x7f000001``
is 127.0.0.1 to it). Every request carries its own timeout, the time left of
the attempt: cancelling the awaiting task would not stop a request inside
reqwest, which would keep its connection and its slot. reqwest names what went
wrong only in the text of its causes, so ``failure_from_reqwest`` sorts by that
text (pinned by tests against real misbehaving peers).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import (
    BuilderError,
    ConnectError,
    DetailedPyreqwestError,
    PyreqwestError,
    RequestTimeoutError,
)
from pyreqwest.http import Url
from pyreqwest.response import Response as ReqwestResponse

from app.core.outcome import FailureKind
from app.core.request import Request
from app.dispatch.sender import KEEPALIVE_S, MAX_RESPONSE_BYTES, Failure, Response
from app.net import GuardedResolver, RefusedAddress, literal_refusal

#: how long a name's checked address is used before it is resolved again
PIN_TTL_S = 10.0
#: names with a client of their own; past this the oldest is let go
MAX_PINNED = 1024
#: URLs whose parse and literal-host verdict are remembered; past this the memory starts over
URL_CACHE_SIZE = 4096


@dataclass(slots=True)
class _Pin:
    client: Client
    address: str
    until: float


@dataclass(frozen=True, slots=True)
class _Parsed:
    url: Url
    #: the host name to pin, or None for an IP literal
    name: str | None
    #: why an IP-literal host is refused, or None
    refused: Failure | None


class ReqwestSender:
    """``allow_private`` turns the address check off (names are still pinned);
    ``resolver`` replaces the system resolver (tests script DNS with it);
    ``monotonic`` is the clock pins expire by."""

    def __init__(
        self,
        *,
        max_connections: int,
        allow_private: bool = False,
        resolver: AbstractResolver | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_connections = max_connections
        self._allow_private = allow_private
        self._inner_resolver = resolver
        self._resolver: AbstractResolver | None = None
        self._monotonic = monotonic
        self._literal_client: Client | None = None
        self._pins: dict[str, _Pin] = {}
        #: a name being resolved -> the resolution every sender to it awaits
        self._resolving: dict[str, asyncio.Task[_Pin]] = {}
        self._parsed: dict[str, _Parsed | Failure] = {}

    def _client(self, pin: tuple[str, str] | None = None) -> Client:
        builder = client_builder(self._max_connections)
        if pin is not None:
            name, address = pin
            builder = builder.resolve(name, address, 0)  # port 0: the URL's own
        return builder.build()

    async def close(self) -> None:
        for resolving in list(self._resolving.values()):
            resolving.cancel()
        await asyncio.gather(*self._resolving.values(), return_exceptions=True)
        clients = [pin.client for pin in self._pins.values()]
        if self._literal_client is not None:
            clients.append(self._literal_client)
        self._pins.clear()
        self._literal_client = None
        for client in clients:
            await client.close()
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            await resolver.close()

    def _parse(self, url: str) -> _Parsed | Failure:
        """``url`` as reqwest reads it, remembered per URL (a target's URL is the
        same string delivery after delivery)."""
        try:
            return self._parsed[url]
        except KeyError:
            pass
        parsed: _Parsed | Failure
        try:
            parsed_url = Url(url)
        except (BuilderError, ValueError) as exc:
            parsed = Failure(kind=FailureKind.INVALID_RESPONSE, message=f"{url}: {exc}")
        else:
            name = parsed_url.domain
            refused = None
            if name is None and not self._allow_private:
                host = (parsed_url.host_str or "").strip("[]")
                why = literal_refusal(host, written=urlsplit(url).hostname or host)
                if why is not None:
                    refused = Failure(kind=FailureKind.PRIVATE_ADDRESS, message=why)
            parsed = _Parsed(url=parsed_url, name=name, refused=refused)
        if len(self._parsed) >= URL_CACHE_SIZE:
            self._parsed.clear()
        self._parsed[url] = parsed
        return parsed

    async def send(self, request: Request) -> Response | Failure:
        deadline = self._monotonic() + request.timeout_s
        parsed = self._parse(request.url)
        if isinstance(parsed, Failure):
            return parsed
        if parsed.refused is not None:
            return parsed.refused
        timed_out = Failure(
            kind=FailureKind.TIMEOUT,
            message=f"{request.url}: no complete answer within {request.timeout_s:g}s",
        )
        if parsed.name is None:
            if self._literal_client is None:
                self._literal_client = self._client()
            client = self._literal_client
        else:
            try:
                async with asyncio.timeout(request.timeout_s):
                    client = await self._pinned(parsed.name)
            except TimeoutError:
                return timed_out
            except RefusedAddress as exc:
                return Failure(kind=FailureKind.PRIVATE_ADDRESS, message=str(exc))
            except OSError as exc:
                return Failure(
                    kind=FailureKind.DNS, message=f"{request.url}: {type(exc).__name__}: {exc}"
                )
        left = deadline - self._monotonic()
        if left <= 0:
            return timed_out
        answered = False
        try:
            async with (
                client.post(parsed.url)
                .headers(_with_defaults(request.headers))
                .body_bytes(request.body)
                .timeout(timedelta(seconds=left))
                .build_streamed() as response
            ):
                answered = True
                body = await _read_capped(response)
                return Response(status=response.status, headers=response.headers, body=body)
        except RequestTimeoutError:
            return timed_out
        except PyreqwestError as exc:
            return failure_from_reqwest(exc, request.url, answered=answered)

    async def _pinned(self, name: str) -> Client:
        pin = self._pins.get(name)
        if pin is not None and pin.until > self._monotonic():
            return pin.client
        resolving = self._resolving.get(name)
        if resolving is None:
            # a task of its own: a sender whose time runs out stops waiting for it,
            # and the others still get its answer
            resolving = asyncio.ensure_future(self._pin(name, pin))
            self._resolving[name] = resolving
            resolving.add_done_callback(lambda done: self._resolved(name, done))
        return (await asyncio.shield(resolving)).client

    def _resolved(self, name: str, done: asyncio.Task[_Pin]) -> None:
        if self._resolving.get(name) is done:
            del self._resolving[name]
        if not done.cancelled():
            done.exception()  # retrieved, whether or not a sender still waits for it

    async def _pin(self, name: str, old: _Pin | None) -> _Pin:
        """Resolve ``name`` (through the guard unless private targets are
        allowed) and keep its client, or make a new one if the address moved."""
        if self._resolver is None:
            inner = self._inner_resolver or aiohttp.ThreadedResolver()
            self._resolver = inner if self._allow_private else GuardedResolver(inner)
        if old is not None:
            self._pins.pop(name, None)  # whatever comes of it, the old pin is not used again
        results = await self._resolver.resolve(name, 0, socket.AF_UNSPEC)
        if not results:
            raise OSError(f"'{name}' resolves to no address")
        address = results[0]["host"]
        until = self._monotonic() + PIN_TTL_S
        if old is not None and old.address == address:
            pin = _Pin(client=old.client, address=address, until=until)
        else:
            # an old client is let go, not closed: requests in flight on it finish
            pin = _Pin(client=self._client((name, address)), address=address, until=until)
        self._pins[name] = pin
        if len(self._pins) > MAX_PINNED:
            del self._pins[next(iter(self._pins))]
        return pin


def client_builder(max_connections: int) -> ClientBuilder:
    """A client as every delivery's: no proxy (one from the environment would
    bypass the pinned address), no redirects, no decompression (the excerpt kept
    is text), HTTP/1.1, at most ``max_connections`` requests in flight."""
    return (
        ClientBuilder()
        .no_proxy()
        .follow_redirects(False)
        .gzip(False)
        .brotli(False)
        .zstd(False)
        .deflate(False)
        .http1_only()
        .http1_lower_case_headers()
        .max_connections(max_connections)
        .pool_idle_timeout(timedelta(seconds=KEEPALIVE_S))
    )


def failure_from_reqwest(exc: PyreqwestError, url: str, *, answered: bool) -> Failure:
    """The kind of failure reqwest's ``exc`` stands for, with the URL and every
    cause reqwest gave, for the log. ``answered``: the status line and headers
    had arrived, so what failed was the body."""
    causes = exc.details.get("causes") if isinstance(exc, DetailedPyreqwestError) else None
    said = " / ".join(c["message"] for c in causes or []) or str(exc)
    message = f"{url}: {type(exc).__name__}: {said}"
    text = said.lower()
    if isinstance(exc, RequestTimeoutError):
        return Failure(kind=FailureKind.TIMEOUT, message=message)
    if answered or isinstance(exc, BuilderError):
        # a body cut short or badly framed, or a URL reqwest refuses
        return Failure(kind=FailureKind.INVALID_RESPONSE, message=message)
    if isinstance(exc, ConnectError):
        if "client error (connect)" in text:
            if "dns error" in text:
                return Failure(kind=FailureKind.DNS, message=message)
            if "tcp connect error" in text:
                # refused, or no route: either way nothing answered at that address
                return Failure(kind=FailureKind.CONNECTION_REFUSED, message=message)
            if url.startswith("https:"):
                # the connection was made; the handshake failed
                return Failure(kind=FailureKind.TLS, message=message)
            return Failure(kind=FailureKind.CONNECTION_REFUSED, message=message)
        # the connection was made, then reset or closed before the answer
        return Failure(kind=FailureKind.CONNECTION_RESET, message=message)
    # a status line or headers that are not HTTP
    return Failure(kind=FailureKind.INVALID_RESPONSE, message=message)


def _with_defaults(headers: Mapping[str, str]) -> dict[str, str]:
    """The request's headers, plus what csjd always says: that it wants the answer
    uncompressed (the excerpt it keeps is text) and any media type."""
    out = dict(headers)
    lower = {name.lower() for name in out}
    if "accept-encoding" not in lower:
        out["accept-encoding"] = "identity"
    if "accept" not in lower:
        out["accept"] = "*/*"
    return out


async def _read_capped(response: ReqwestResponse) -> bytes:
    """At most ``MAX_RESPONSE_BYTES`` of the body, in one read: reqwest fills it up
    to the amount asked for or the body's end (each await is a trip to its thread)."""
    chunk = await response.body_reader.read(MAX_RESPONSE_BYTES)
    return b"" if chunk is None else bytes(chunk)
