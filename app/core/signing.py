"""Standard Webhooks signatures, made by the reference implementation.

A target's ``secret`` holds one or more ``whsec_`` secrets separated by spaces
(several while a secret is being rotated); a delivery carries one
``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` per secret, separated
by spaces, so a consumer holding any one of them can verify it. This module
validates secrets and signs; it neither stores nor logs them.
"""

from __future__ import annotations

import base64
import binascii
import functools
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
#: distinct secret strings whose ``Webhook`` objects are kept (one per signing target)
SIGNERS_CACHED = 1024


def decode_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_`` secret, or ``ValueError``."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a secret is 'whsec_' followed by base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a secret holds at least {MIN_SECRET_BYTES} bytes")
    return key


def decode_secrets(secrets: str) -> list[bytes]:
    """The key bytes of each space-separated secret, or ``ValueError`` naming
    which one is wrong (by position: the value itself is never repeated)."""
    parts = secrets.split()
    if not parts:
        raise ValueError("give at least one secret")
    keys = []
    for n, part in enumerate(parts, start=1):
        try:
            keys.append(decode_secret(part))
        except ValueError as exc:
            where = f"secret {n} of {len(parts)}: " if len(parts) > 1 else ""
            raise ValueError(f"{where}{exc}") from None
    return keys


@functools.lru_cache(maxsize=SIGNERS_CACHED)
def _signers(secrets: str) -> tuple[Webhook, ...]:
    return tuple(Webhook(part) for part in secrets.split())


def sign(secrets: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret in ``secrets``
    (already validated), in their order."""
    when = datetime.fromtimestamp(timestamp, UTC)
    data = body.decode()  # compact JSON: UTF-8, as the library encodes it back
    return " ".join(signer.sign(msg_id, when, data) for signer in _signers(secrets))
