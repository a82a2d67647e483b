"""Holding target URLs to the private-address policy, at registration and at connect.

``check_target_url`` judges a URL when a target is registered: the host is
resolved (numeric forms such as ``127.1`` or ``0x7f000001`` included, as the
resolver reads them) and every address it yields must be public unless
``CSJD_ALLOW_PRIVATE_TARGETS``. A host that does not resolve now is accepted:
it may resolve later. Because a name may resolve elsewhere by the time a job
is delivered (DNS rebinding), the sender judges again when it connects:
``GuardedResolver`` wraps the resolver aiohttp connects through and drops
refused addresses, raising ``RefusedAddress`` when none is left, and
``literal_refusal`` judges the IP-literal hosts aiohttp never resolves. The
policy itself (which addresses are private) is ``app.core.addresses``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from app.core.addresses import IPAddress, parse_ip, refusal
from app.core.errors import RefusedUrl

RESOLVE_TIMEOUT_S = 2.0
#: dot-separated labels of letters, digits, hyphens and underscores (seen in
#: service names), with an optional trailing dot
_HOST = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?$")
_UNLESS_ALLOWED = "private targets are refused unless CSJD_ALLOW_PRIVATE_TARGETS is set"


class RefusedAddress(OSError):
    """Every address a host resolves to is private; nothing was connected to."""


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
    if not _valid_host(parts.hostname):
        raise RefusedUrl(f"'{parts.hostname}' is not a host name or an IP address")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _valid_host(host: str) -> bool:
    """A name made of DNS labels (international names as IDNA), or an IP literal."""
    if parse_ip(host) is not None:
        return True
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return _HOST.match(ascii_host) is not None


async def check_target_url(
    url: str, *, allow_private: bool, resolver: AbstractResolver | None = None
) -> None:
    """Raise ``RefusedUrl`` unless ``url`` may be registered.

    ``resolver`` replaces the system resolver (tests make a name resolve as
    they need it to)."""
    _, host, port = split_url(url)
    if allow_private:
        return
    literal = parse_ip(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                if resolver is None:
                    infos = await asyncio.get_running_loop().getaddrinfo(
                        host, port, type=socket.SOCK_STREAM
                    )
                    found = [str(info[4][0]) for info in infos]
                else:
                    results = await resolver.resolve(host, port, family=socket.AF_UNSPEC)
                    found = [r["host"] for r in results]
        except (OSError, TimeoutError):
            return
        addresses = [a for a in map(parse_ip, found) if a is not None]
    for address in addresses:
        why = refusal(address)
        if why is not None:
            raise RefusedUrl(
                f"'{host}' is {why} ({address}); {_UNLESS_ALLOWED}",
                extensions={"address": str(address)},
            )


def literal_refusal(host: str, *, written: str | None = None) -> str | None:
    """Why connecting to ``host`` is refused, if aiohttp would take it for an IP
    literal (and so never ask a resolver); None for a public literal or a name.
    ``written`` is the host as the URL spelled it, when a client has already
    read it as an address (the message names it as the producer wrote it).

    aiohttp's test is loose (any digits and dots, or a colon), and legacy IPv4
    forms such as ``127.1`` or ``2130706433`` reach the socket layer, which reads
    them as ``inet_aton`` does; so they are read that way here. A literal that
    cannot be read at all is refused: there is no telling where it leads."""
    if ":" in host:
        address: IPAddress | None = parse_ip(host)
    elif host.replace(".", "").isdigit():
        try:
            address = parse_ip(socket.inet_ntoa(socket.inet_aton(host)))
        except (OSError, ValueError):
            address = None
    else:
        return None
    if address is None:
        return f"'{host}' is not an IP address csjd can read; {_UNLESS_ALLOWED}"
    why = refusal(address)
    if why is None:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # the address it is judged by
    named = written or host
    shown = "" if str(address) == named else f" ({address})"
    return f"'{named}' is {why}{shown}; {_UNLESS_ALLOWED}"


class GuardedResolver(AbstractResolver):
    """Resolves through ``inner`` and keeps only public addresses."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        first: tuple[str, IPAddress | None] | None = None
        for result in results:
            address = parse_ip(result["host"])
            why = "an address csjd cannot read" if address is None else refusal(address)
            if why is None:
                kept.append(result)
            elif first is None:
                first = (why, address)
        if first is not None and not kept:
            why, address = first
            shown = "" if address is None else f" ({address})"
            raise RefusedAddress(f"'{host}' resolves to {why}{shown}; {_UNLESS_ALLOWED}")
        return kept

    async def close(self) -> None:
        await self._inner.close()
