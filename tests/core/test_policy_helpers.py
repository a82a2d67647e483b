import ipaddress

import pytest

from app.core.addresses import refusal
from app.core.headers import header_problems
from app.core.ids import uuid7


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "224.0.0.1",
    ],
)
def test_private_and_special_addresses_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address",
    ["64:ff9b:1::a00:1", "64:ff9b:1::5db8:d822", "64:ff9b:1:ffff:ffff:ffff:ffff:ffff"],
)
def test_local_use_nat64_is_refused_whatever_ipv4_address_it_carries(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == "a local-use NAT64 address"


def test_well_known_nat64_is_judged_by_the_ipv4_address_it_carries() -> None:
    assert refusal(ipaddress.ip_address("64:ff9b::5db8:d822")) is None  # 93.184.216.34
    assert refusal(ipaddress.ip_address("64:ff9b::a00:1")) == "a private address"


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_headers_csjd_owns_or_hop_by_hop_cannot_be_added() -> None:
    assert header_problems({"X-Tenant": "a", "Authorization": "Bearer t"}) == []
    for name in [
        "webhook-id",
        "Webhook-Signature",
        "Connection",
        "Host",
        "Content-Length",
        "idempotency-key",
        "csjd-attempt",
        "Transfer-Encoding",
        "User-Agent",
    ]:
        assert header_problems({name: "x"}), name
    assert header_problems({"bad name": "x"})
    assert header_problems({"X-A": "line\r\nbreak"})


def test_uuid7_ids_sort_by_creation() -> None:
    ids = [uuid7() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 2000
    assert all(i[14] == "7" for i in ids)
    assert uuid7(1_000) < uuid7(2_000)
