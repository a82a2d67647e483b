"""Which headers a target or a job may add to its deliveries.

Hop-by-hop headers, the framing headers, and the headers csjd itself owns
(``webhook-*``, ``idempotency-key``, ``csjd-*``, ``user-agent``,
``content-type``) are refused, so no one can forge a signature or break the
request. Names must be HTTP tokens and values may not hold control characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
    }
)
_OWNED = frozenset({"idempotency-key", "user-agent", "content-type"})
_OWNED_PREFIXES = ("webhook-", "csjd-")
MAX_HEADERS = 32
MAX_VALUE_LENGTH = 4096


def header_problems(headers: Mapping[str, str]) -> list[str]:
    """Every reason ``headers`` cannot be added to a delivery (empty if fine)."""
    problems: list[str] = []
    if len(headers) > MAX_HEADERS:
        problems.append(f"at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, value in headers.items():
        lower = name.lower()
        if not _TOKEN.match(name):
            problems.append(f"'{name}' is not a valid header name")
        elif lower in _HOP_BY_HOP or lower in _OWNED or lower.startswith(_OWNED_PREFIXES):
            problems.append(f"'{name}' is set by csjd or is hop-by-hop and cannot be added")
        elif lower in seen:
            problems.append(f"'{name}' is given twice")
        seen.add(lower)
        if len(value) > MAX_VALUE_LENGTH:
            problems.append(f"the value of '{name}' is longer than {MAX_VALUE_LENGTH}")
        elif any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in value):
            problems.append(f"the value of '{name}' holds control characters")
    return problems
