"""Which network addresses a target may point at.

Targets on loopback, RFC 1918, link-local (cloud metadata), CGNAT, IPv6 ULA,
local-use NAT64, unspecified, multicast or reserved addresses are refused
unless the operator allows private targets. IPv4-mapped, 6to4 and well-known
NAT64 IPv6 forms are judged by the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: local-use NAT64 (RFC 8215): a translator inside the operator's own network,
#: so whatever IPv4 address it carries, it leads inside
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
#: IPv6 site-local, deprecated (RFC 3879) but still routed inside some networks
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination, or None if it is."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return refusal(mapped)
        if address in _NAT64:
            return refusal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address in _LOCAL_NAT64:
            return "a local-use NAT64 address"
        if address.teredo is not None:
            return "a Teredo address"
        if address in _SITE_LOCAL:
            return "a site-local address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a carrier-grade NAT address"
    if address.is_private:
        return "a private address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    return None
