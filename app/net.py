"""Checking a target URL against the private-address policy at registration.

The host is resolved (numeric forms such as ``127.1`` or ``0x7f000001``
included, as the resolver reads them) and every address it yields must be
public unless ``CSJD_ALLOW_PRIVATE_TARGETS``. A host that does not resolve now
is accepted: it may resolve later, and the sender refuses what it cannot reach.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

from app.core.addresses import parse_ip, refusal
from app.core.errors import RefusedUrl

RESOLVE_TIMEOUT_S = 2.0


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, or ``RefusedUrl``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedUrl(f"'{url}' is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise RefusedUrl("a target URL uses http or https")
    if not parts.hostname:
        raise RefusedUrl("a target URL names a host")
    if parts.username or parts.password:
        raise RefusedUrl("a target URL may not carry credentials; use headers")
    if parts.fragment:
        raise RefusedUrl("a target URL has no fragment")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_target_url(url: str, *, allow_private: bool) -> None:
    _, host, port = split_url(url)
    if allow_private:
        return
    literal = parse_ip(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError):
            return
        addresses = [a for a in (parse_ip(str(info[4][0])) for info in infos) if a is not None]
    for address in addresses:
        why = refusal(address)
        if why is not None:
            raise RefusedUrl(
                f"'{host}' is {why} ({address}); private targets are refused unless "
                "CSJD_ALLOW_PRIVATE_TARGETS is set",
                extensions={"address": str(address)},
            )
