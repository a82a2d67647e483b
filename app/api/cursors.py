"""Paging cursors of ``GET /jobs``: opaque to the client, a job id to the server.

A page ends at a job; the next starts below its id (ids are UUIDv7, so newest
first is by id). A cursor this server did not give out is a ``400``.
"""

from __future__ import annotations

import base64

from app.core import errors


def encode_cursor(job_id: str) -> str:
    return base64.urlsafe_b64encode(job_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise errors.BadRequest("the cursor is not one this server gave out") from None
    if len(raw) != 36:
        raise errors.BadRequest("the cursor is not one this server gave out")
    return raw
