"""What csjd keeps of a target's answer: text any database stores, and its size.

A target may answer anything: binary data, invalid UTF-8, NUL bytes (which
Postgres refuses in a text column). ``excerpt`` keeps the text it can of the
first bytes, with every byte that is not text replaced by U+FFFD, and
``storable`` makes any string safe for a text column of a given length. Pure
functions: the dispatcher calls them on the answer, the store on every text it
writes from outside (errors, excerpts, media types).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: bytes of the answer's body kept as its excerpt
EXCERPT_BYTES = 2048
REPLACEMENT = "\ufffd"
#: the largest length recorded (a signed 64-bit column holds it on every backend)
MAX_LENGTH = 2**62
_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters, without NUL or lone surrogates."""
    if text is None:
        return None
    text = text[:limit]
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE.sub(REPLACEMENT, text)
    return text


def excerpt(body: bytes, limit: int = EXCERPT_BYTES) -> str | None:
    """The first ``limit`` bytes of ``body`` as storable text (None when empty)."""
    if not body:
        return None
    return storable(body[:limit].decode("utf-8", errors="replace"), limit)


def media_type(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Content-Type")
    return storable(value.strip(), 255) if value else None


def length(headers: Mapping[str, str], body: bytes) -> int:
    """The answer's length: its ``Content-Length`` when it states one, else the bytes read."""
    declared = (headers.get("Content-Length") or "").strip()
    if declared.isdigit() and len(declared) <= len(str(MAX_LENGTH)):
        return min(MAX_LENGTH, max(int(declared), len(body)))
    return len(body)
