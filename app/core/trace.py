"""W3C Trace Context: a producer's ``traceparent`` and ``tracestate``, kept and continued.

A job's trace context lives in its own headers, under the lowercase names
``traceparent`` and ``tracestate``, so it is stored, shown and delivered like
any other header of the job. ``from_request`` reads it from a request's
headers and ``from_job_headers`` from a job body's ``headers`` (the body's
wins); ``with_context`` puts it back into the headers a job keeps, and
``continued`` is the ``traceparent`` one attempt sends: the same trace id and
flags under a new parent id. What W3C Trace Context calls invalid is ignored
as it says: an invalid ``traceparent`` starts no trace here (its
``tracestate`` goes with it), an invalid ``tracestate`` is dropped alone.
Versions above ``00`` are read as ``00`` is (their first four fields) and
continued as ``00``. Pure: the new ids are arguments; ``app/tracing.py`` makes
them, or the OpenTelemetry SDK does (``app/otel.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_NAMES = (TRACEPARENT, TRACESTATE)

_HEX = frozenset("0123456789abcdef")
#: version 00 is exactly this long; a later version may add fields after a dash
_LENGTH = 55
#: the most list-members a tracestate may have
_MAX_MEMBERS = 32
#: the longest tracestate kept (a job header's limit, ``headers.py``); W3C asks
#: that at least 512 characters be passed on
MAX_TRACESTATE_LENGTH = 4096
_KEY_CHARS = r"[a-z0-9_\-*/]"
_MEMBER = re.compile(
    rf"(?:[a-z]{_KEY_CHARS}{{0,255}}|[a-z0-9]{_KEY_CHARS}{{0,240}}@[a-z]{_KEY_CHARS}{{0,13}})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A valid trace context: 32 and 16 lowercase hex digits, neither all zeros,
    and the two-digit flags; ``state`` is the tracestate to pass on, if any."""

    trace_id: str
    parent_id: str
    flags: str
    state: str | None = None

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)


def parse(traceparent: str, tracestate: str | None = None) -> TraceContext | None:
    """The context ``traceparent`` names (with ``tracestate`` if it is valid), or
    None when ``traceparent`` is invalid."""
    value = traceparent.strip(" \t")
    version = value[:2]
    if len(value) < _LENGTH or not _is_hex(version) or version == "ff":
        return None
    if len(value) > _LENGTH and (version == "00" or value[_LENGTH] != "-"):
        return None
    trace_id, parent_id, flags = value[3:35], value[36:52], value[53:55]
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    if not (_is_hex(trace_id) and _is_hex(parent_id) and _is_hex(flags)):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    if version != "00":  # only the flags version 00 defines are passed on
        flags = f"{int(flags, 16) & 1:02x}"
    return TraceContext(trace_id, parent_id, flags, _valid_state(tracestate))


def from_request(traceparents: Sequence[str], tracestates: Sequence[str]) -> TraceContext | None:
    """The context of a request with these header fields: none unless exactly one
    ``traceparent``; several ``tracestate`` fields are one list."""
    if len(traceparents) != 1:
        return None
    return parse(traceparents[0], ",".join(tracestates) if tracestates else None)


def from_job_headers(headers: Mapping[str, str]) -> tuple[Mapping[str, str], TraceContext | None]:
    """A job body's ``headers`` without its trace headers (any case), and the
    context they name. ``headers`` itself comes back when it names none."""
    if not any(name.lower() in _NAMES for name in headers):
        return headers, None
    rest: dict[str, str] = {}
    found: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in _NAMES:
            found[lower] = value
        else:
            rest[name] = value
    traceparent = found.get(TRACEPARENT)
    return rest, parse(traceparent, found.get(TRACESTATE)) if traceparent is not None else None


def with_context(headers: Mapping[str, str], context: TraceContext | None) -> dict[str, str]:
    """``headers`` (which name no trace header) with ``context``'s, as a job keeps them."""
    kept = dict(headers)
    if context is not None:
        kept[TRACEPARENT] = context.traceparent
        if context.state:
            kept[TRACESTATE] = context.state
    return kept


def of_job(headers: Mapping[str, str] | None) -> TraceContext | None:
    """The context a stored job's headers keep, if any (and valid)."""
    if not headers:
        return None
    traceparent = headers.get(TRACEPARENT)
    if traceparent is None:
        return None
    return parse(traceparent, headers.get(TRACESTATE))


def continued(context: TraceContext, parent_id: str) -> str:
    """The ``traceparent`` one attempt sends: ``context``'s trace under ``parent_id``."""
    return f"00-{context.trace_id}-{parent_id}-{context.flags}"


def parent_id_from(bits: int) -> str:
    """A parent id from 64 random bits (all zeros is invalid: it becomes 1)."""
    return f"{bits or 1:016x}"


def _is_hex(value: str) -> bool:
    return _HEX.issuperset(value)


def _valid_state(tracestate: str | None) -> str | None:
    """``tracestate`` with its blank members left out, or None if it is invalid
    (W3C: a vendor may then drop it whole) or longer than csjd keeps."""
    if tracestate is None:
        return None
    members = [m.strip(" \t") for m in tracestate.split(",")]
    members = [m for m in members if m]
    if not members or len(members) > _MAX_MEMBERS:
        return None
    keys: set[str] = set()
    for member in members:
        if not _MEMBER.fullmatch(member):
            return None
        keys.add(member.partition("=")[0])
    if len(keys) < len(members):  # a key given twice
        return None
    state = ",".join(members)
    return state if len(state) <= MAX_TRACESTATE_LENGTH else None
