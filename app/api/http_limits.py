"""Limits on how a client speaks HTTP/1.1, enforced as bytes arrive and before the app runs.

``LimitedHttpToolsProtocol`` is uvicorn's httptools protocol with the limits
uvicorn leaves out: more than ``max_headers`` request headers, or a request
line and headers over ``max_head_bytes``, get ``431``; a client that has not
sent its whole request line and headers ``head_timeout_s`` after it connected
(or after it began the request, on a kept-alive connection), or its whole body
``body_timeout_s`` after its headers, gets ``408``; a request httptools cannot
parse gets ``400``. A request that arrives while uvicorn's ``limit_concurrency``
(``CSJD_MAX_CONNECTIONS``) is reached gets ``503``, judged as uvicorn judges it
(open connections, this one included, or requests under way) but answered
here, ahead of uvicorn's own plain-text 503. Each answer is problem+json and
closes the connection, so slow or endless requests cannot pile up
connections; a connection that sent nothing is closed without an answer. Per
request this costs a few integer updates and one ``len`` of the headers
uvicorn collects anyway; the headers' bytes are summed, and a timer armed,
only when the reads leave room for doubt. What a request says (its body's
size, type and nesting) is ``guard.py``'s to judge; an idle kept-alive
connection is closed by uvicorn (``timeout_keep_alive``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar, NoReturn

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.api import problems
from app.core.errors import PROBLEM_BASE

log = logging.getLogger("csjd.http")

#: where a connection is in its current request
_WAITING, _HEAD, _BODY = 0, 1, 2

#: ": " and CRLF around a header as sent; the counted head is the bytes as sent
_HEADER_FRAMING = 4

_ANSWERS = {
    400: ("malformed-request", "Malformed request"),
    408: ("request-timeout", "Request timeout"),
    431: ("request-header-fields-too-large", "Request header fields too large"),
    503: ("too-many-connections", "Too many connections"),
}
#: how soon a client refused for too many connections may try again
BUSY_RETRY_AFTER_S = 1


class _OverLimit(Exception):
    """Raised in a parser callback to stop parsing a request over a limit."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` with header limits and deadlines; subclass to change them."""

    max_headers: ClassVar[int] = 100
    max_head_bytes: ClassVar[int] = 16 * 1024
    head_timeout_s: ClassVar[float] = 10.0
    body_timeout_s: ClassVar[float] = 30.0

    # per connection and request; class defaults spare an __init__ override
    _phase: int = _WAITING
    _deadline: asyncio.TimerHandle | None = None
    #: the length of the read being parsed
    _read_len = 0
    #: the reads since the current request began, and the one it began in (which
    #: may also hold the end of the previous one); httptools holds an unfinished
    #: header back from the callbacks, and these keep it bounded
    _head_read = 0
    _first_read = 0
    _over: tuple[int, str] | None = None

    # -- the connection ---------------------------------------------------------

    # uvicorn narrows the transport the same way (asyncio hands every protocol one)
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # the first request's head is due this long after connecting
        self._arm(self.head_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's, with refusals answered as problems and the deadlines armed
        self._unset_keepalive_if_required()
        self._read_len = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._over is not None:
                self._answer(*self._over)
            else:
                self._answer(400, "the request is not valid HTTP/1.1")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # the usual request arrives whole in one read, and none of this runs
        if self._phase == _HEAD:
            self._head_read += len(data)
            if self._head_read - self._first_read > self.max_head_bytes:
                self._answer(*self._head_too_large())
                return
            if self._deadline is None:
                self._arm(self.head_timeout_s)
        elif self._phase == _BODY:
            if self._deadline is None:
                self._arm(self.body_timeout_s)
        elif self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            # bytes that began no request (blank lines) must not keep a connection open
            self._arm(self.head_timeout_s)

    # -- parser callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _HEAD
        self._head_read = 0
        self._first_read = self._read_len

    def on_headers_complete(self) -> None:
        if self._deadline is not None:
            self._disarm()
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self._stop((503, f"the server is at its limit of {limit} connections; try again"))
        # uvicorn has collected the headers; their count and size are checked
        # once, and the size only when the reads could hold that many bytes
        if len(self.headers) > self.max_headers:
            self._stop((431, f"a request may carry at most {self.max_headers} headers"))
        if self._head_read + self._read_len > self.max_head_bytes and (
            len(self.url) + sum(len(n) + len(v) + _HEADER_FRAMING for n, v in self.headers)
            > self.max_head_bytes
        ):
            self._stop(self._head_too_large())
        self._phase = _BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._deadline is not None:
            self._disarm()
        self._phase = _WAITING
        super().on_message_complete()

    # -- refusing ---------------------------------------------------------------

    def _head_too_large(self) -> tuple[int, str]:
        return (431, f"the request line and headers may be at most {self.max_head_bytes} bytes")

    def _stop(self, over: tuple[int, str]) -> NoReturn:
        self._over = over
        raise _OverLimit(over[1])

    def _arm(self, delay: float) -> None:
        self._deadline = self.loop.call_later(delay, self._deadline_passed)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._phase == _WAITING:
            self.transport.close()  # no request began: there is nothing to answer
        elif self._phase == _BODY and self.flow.read_paused:
            self._arm(self.body_timeout_s)  # the app is not reading; the client is not late
        elif self._phase == _HEAD:
            self._answer(408, f"the request headers did not arrive within {self.head_timeout_s} s")
        else:
            self._answer(408, f"the request body did not arrive within {self.body_timeout_s} s")

    def _answer(self, status: int, detail: str) -> None:
        """Answer ``status`` and close, unless another answer is under way (then just close)."""
        self._disarm()
        cycle = self.cycle
        log.info("request_refused", extra={"status": status, "detail": detail})
        if self._phase == _BODY:
            # this request's own cycle: the app may be waiting for the rest of the body
            if cycle.response_started:
                self.transport.close()
                return
            cycle.disconnected = True  # whatever the app answers now goes nowhere
            cycle.message_event.set()
        elif cycle is not None and not cycle.response_complete:
            self.transport.close()  # an earlier request's answer is still being written
            return
        slug, title = _ANSWERS[status]
        response = problems.problem(
            status,
            detail=detail,
            title=title,
            type_=PROBLEM_BASE + slug,
            retry_after_s=BUSY_RETRY_AFTER_S if status == 503 else None,
        )
        lines = [STATUS_LINE[status]]
        for name, value in (
            *self.server_state.default_headers,
            *response.raw_headers,
            (b"connection", b"close"),
        ):
            lines += [name, b": ", value, b"\r\n"]
        lines += [b"\r\n", bytes(response.body)]
        self.transport.write(b"".join(lines))
        self.transport.close()
