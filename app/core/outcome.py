"""The delivery outcome table: what one answer (or failure) from a target means.

Classification is pure: an HTTP status and its ``Retry-After`` header, or a
transport failure kind, become an ``Outcome`` with whether the attempt counts.
What happens to the job afterwards is ``app.core.retry.decide``'s business.
The error a producer reads (``last_error``, an attempt's ``error``) is made
here from the kind alone, never from what the network said: the transport's
own text names the target's URL, host and addresses, and belongs in the log.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from enum import StrEnum

RETRY_AFTER_MIN_S = 1.0
RETRY_AFTER_MAX_S = 3600.0


class Outcome(StrEnum):
    SUCCESS = "success"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    THROTTLED = "throttled"
    INTERRUPTED = "interrupted"


class FailureKind(StrEnum):
    """Why no HTTP answer came back."""

    TIMEOUT = "timeout"
    #: no connection could be made (refused, or no route to the address)
    CONNECTION_REFUSED = "connection_refused"
    #: the connection broke, or was closed, before a whole answer came back
    CONNECTION_RESET = "connection_reset"
    DNS = "dns"
    TLS = "tls"
    #: the peer answered, but not with HTTP csjd can read
    INVALID_RESPONSE = "invalid_response"
    #: every address the host resolves to is private (connect-time SSRF guard)
    PRIVATE_ADDRESS = "private_address"
    #: csjd itself failed during the attempt
    INTERNAL = "internal"


#: what a producer reads for each kind (a timeout names the deadline too)
_SHOWN = {
    FailureKind.CONNECTION_REFUSED: "connection refused",
    FailureKind.CONNECTION_RESET: "connection reset",
    FailureKind.DNS: "DNS lookup failed",
    FailureKind.TLS: "TLS handshake failed",
    FailureKind.INVALID_RESPONSE: "invalid HTTP response",
    FailureKind.PRIVATE_ADDRESS: "address refused (private network)",
    FailureKind.INTERNAL: "internal error in csjd",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Classified:
    outcome: Outcome
    counted: bool
    error: str | None = None
    status_code: int | None = None
    #: the target answered 410 Gone: it is to be disabled.
    gone: bool = False
    #: seconds the target asked us to wait, already clamped; None to back off.
    retry_after_s: float | None = None
    #: the attempt ran out of time (halves the adaptive limit later on).
    timed_out: bool = False


_RETRYABLE_4XX = frozenset({408, 425})


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        seconds = float(int(value))
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    return min(RETRY_AFTER_MAX_S, max(RETRY_AFTER_MIN_S, seconds))


def classify_response(status: int, retry_after: str | None, now: float) -> Classified:
    if 200 <= status < 300:
        return Classified(outcome=Outcome.SUCCESS, counted=True, status_code=status)
    error = f"HTTP {status}"
    delay = parse_retry_after(retry_after, now)
    if status == 429 or (status == 503 and delay is not None):
        return Classified(
            outcome=Outcome.THROTTLED,
            counted=False,
            status_code=status,
            error=error,
            retry_after_s=delay,
        )
    if status >= 500 or status in _RETRYABLE_4XX:
        return Classified(outcome=Outcome.RETRYABLE, counted=True, status_code=status, error=error)
    return Classified(
        outcome=Outcome.PERMANENT,
        counted=True,
        status_code=status,
        error=error,
        gone=status == 410,
    )


def describe_failure(kind: FailureKind, timeout_s: float) -> str:
    """What producers read of a failure: its kind, and for a timeout the deadline
    (``timeout_s``, the target's) that ran out."""
    if kind is FailureKind.TIMEOUT:
        return f"timed out after {timeout_s:g} s"
    return _SHOWN[kind]


def classify_failure(kind: FailureKind, *, timeout_s: float) -> Classified:
    """A request that produced no answer: retryable, and counted.

    A refused address counts too, like a DNS error: the name may resolve to a
    public address again, and a target that keeps pointing inside runs out of
    attempts instead of retrying for ever."""
    return Classified(
        outcome=Outcome.RETRYABLE,
        counted=True,
        error=describe_failure(kind, timeout_s),
        timed_out=kind is FailureKind.TIMEOUT,
    )
