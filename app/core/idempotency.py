"""Idempotency keys and request fingerprints.

A key arrives as the ``Idempotency-Key`` header in either structured-field
string form (``"abc"``) or bare (``abc``); both name the same key. The
fingerprint of a request is a SHA-256 over its target and the canonical JSON
of its (validated) body, so key order, whitespace and ``1`` vs ``1.0`` do not
make two requests differ: numbers are compared by value (``1e19`` is
``10000000000000000000``, ``-0.0`` is ``0``), strings code point by code point
(no Unicode normalisation). Bodies hold finite numbers and integers within
``INT_RANGE`` only; intake refuses the rest.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import orjson

from app.core.errors import InvalidIdempotencyKey

MAX_KEY_LENGTH = 255
#: the integers orjson writes (and so the ones a payload may hold)
INT_RANGE = (-(2**63), 2**64 - 1)


def parse_key(raw: str | None) -> str:
    """The key named by a header value, or ``InvalidIdempotencyKey``."""
    if raw is None:
        raise InvalidIdempotencyKey("the Idempotency-Key header is required")
    value = raw.strip(" \t")
    if value.startswith('"'):
        value = _unquote_sf_string(value)
    if not value:
        raise InvalidIdempotencyKey("the Idempotency-Key is empty")
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            f"the Idempotency-Key is longer than {MAX_KEY_LENGTH} characters"
        )
    if not all("\x21" <= ch <= "\x7e" for ch in value):
        raise InvalidIdempotencyKey("the Idempotency-Key may hold only visible ASCII characters")
    return value


def _unquote_sf_string(value: str) -> str:
    """RFC 8941 sf-string: ``"`` … ``"`` with ``\\"`` and ``\\\\`` escapes."""
    out: list[str] = []
    i = 1
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            if i + 1 >= len(value) or value[i + 1] not in '"\\':
                raise InvalidIdempotencyKey("the quoted Idempotency-Key has a bad escape")
            out.append(value[i + 1])
            i += 2
            continue
        if ch == '"':
            if i != len(value) - 1:
                raise InvalidIdempotencyKey("the quoted Idempotency-Key has text after it")
            return "".join(out)
        out.append(ch)
        i += 1
    raise InvalidIdempotencyKey("the quoted Idempotency-Key is not closed")


def canonical(value: Any) -> Any:
    """The value with numbers in one form: integral floats become integers.

    Every integral float in ``INT_RANGE`` is exactly one integer there; those
    outside it can equal no integer a body may hold, and stay floats.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and INT_RANGE[0] <= value <= INT_RANGE[1]:
            return int(value)
        return value
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def canonical_json(value: Any) -> bytes:
    return orjson.dumps(canonical(value), option=orjson.OPT_SORT_KEYS)


def fingerprint(target: str, body: Any) -> str:
    digest = hashlib.sha256()
    digest.update(target.encode())
    digest.update(b"\x00")
    digest.update(canonical_json(body))
    return digest.hexdigest()
