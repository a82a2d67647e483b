"""The connect-time address guard: each real sender (aiohttp, reqwest), a real local sink.

Registration already refuses private addresses; these tests prove the sender
refuses them again when it connects, whatever the URL's host looks like and
whatever a name resolves to by then (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from app.core.outcome import FailureKind
from app.dispatch.reqwest_sender import PIN_TTL_S, ReqwestSender
from app.dispatch.sender import Failure, Request, Response
from app.net import GuardedResolver, RefusedAddress, check_target_url
from app.testing import Sink
from tests.dispatch.conftest import RealSender

PUBLIC = "93.184.216.34"


class ScriptedResolver(AbstractResolver):
    """A DNS the test controls: each name answers what ``answers`` says now."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        return None


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


def request(url: str) -> Request:
    # short: a guard that let 169.254.169.254 through would otherwise hang the test
    return Request(url=url, body=b'{"a":1}', headers={}, timeout_s=2.0)


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("localhost", "'localhost' resolves to a loopback address (127.0.0.1)"),
        ("127.1", "'127.1' is a loopback address (127.0.0.1)"),
        (
            "0x7f000001",
            {
                # aiohttp leaves it to the resolver; reqwest reads it as an address
                "AiohttpSender": "'0x7f000001' resolves to a loopback address (127.0.0.1)",
                "ReqwestSender": "'0x7f000001' is a loopback address (127.0.0.1)",
            },
        ),
        ("[::1]", "'::1' is a loopback address"),
        (
            "[::ffff:127.0.0.1]",
            {
                "AiohttpSender": "'::ffff:7f00:1' is a loopback address (127.0.0.1)",
                "ReqwestSender": "'::ffff:127.0.0.1' is a loopback address (127.0.0.1)",
            },
        ),
        ("169.254.169.254", "'169.254.169.254' is a link-local address"),
    ],
)
async def test_private_hosts_are_refused_at_connect_and_nothing_arrives(
    sink: Sink, real_sender: RealSender, host: str, shown: str | dict[str, str]
) -> None:
    if isinstance(shown, dict):  # the clients read these hosts differently; both refuse
        shown = shown[real_sender.__name__]
    sender = real_sender(max_connections=4)
    try:
        result = await sender.send(request(f"http://{host}:{sink.port}/hook"))
    finally:
        await sender.close()
    assert isinstance(result, Failure) and result.kind is FailureKind.PRIVATE_ADDRESS, result
    assert result.message.startswith(shown)
    assert result.message.endswith(
        "private targets are refused unless CSJD_ALLOW_PRIVATE_TARGETS is set"
    )
    assert sink.received() == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0x7f000001"])
async def test_private_hosts_are_delivered_when_allowed(
    sink: Sink, real_sender: RealSender, host: str
) -> None:
    sender = real_sender(max_connections=4, allow_private=True)
    try:
        result = await sender.send(request(f"http://{host}:{sink.port}/hook"))
    finally:
        await sender.close()
    assert isinstance(result, Response) and result.status == 200
    assert [r.body for r in sink.received("/hook")] == [b'{"a":1}']


async def test_a_name_that_rebinds_to_loopback_after_registration_is_refused(
    sink: Sink, real_sender: RealSender
) -> None:
    url = f"http://rebind.example:{sink.port}/hook"
    dns = ScriptedResolver({"rebind.example": [PUBLIC]})
    await check_target_url(url, allow_private=False, resolver=dns)  # registered: public
    dns.answers["rebind.example"] = ["127.0.0.1"]
    sender = real_sender(max_connections=4, resolver=dns)
    try:
        result = await sender.send(request(url))
    finally:
        await sender.close()
    assert isinstance(result, Failure) and result.kind is FailureKind.PRIVATE_ADDRESS, result
    assert result.message == (
        "'rebind.example' resolves to a loopback address (127.0.0.1); "
        "private targets are refused unless CSJD_ALLOW_PRIVATE_TARGETS is set"
    )
    assert sink.received() == []


async def test_local_use_nat64_is_refused_at_connect_as_a_literal_and_as_a_name(
    real_sender: RealSender,
) -> None:
    nat64 = "64:ff9b:1::5db8:d822"  # a public IPv4 address behind the operator's translator
    dns = ScriptedResolver({"nat64.example": [nat64]})
    sender = real_sender(max_connections=4, resolver=dns)
    try:
        literal = await sender.send(request(f"http://[{nat64}]/hook"))
        named = await sender.send(request("http://nat64.example/hook"))
    finally:
        await sender.close()
    for result in (literal, named):
        assert isinstance(result, Failure) and result.kind is FailureKind.PRIVATE_ADDRESS, result
        assert "a local-use NAT64 address" in result.message


async def test_the_scripted_name_does_reach_the_sink_when_private_targets_are_allowed(
    sink: Sink, real_sender: RealSender
) -> None:
    # the refusal above is the guard's doing, not a name that leads nowhere
    dns = ScriptedResolver({"rebind.example": ["127.0.0.1"]})
    sender = real_sender(max_connections=4, allow_private=True, resolver=dns)
    try:
        result = await sender.send(request(f"http://rebind.example:{sink.port}/hook"))
    finally:
        await sender.close()
    assert isinstance(result, Response) and result.status == 200
    assert len(sink.received("/hook")) == 1


async def test_a_name_that_does_not_resolve_is_still_a_dns_failure(
    real_sender: RealSender,
) -> None:
    sender = real_sender(max_connections=4, resolver=ScriptedResolver({}))
    try:
        result = await sender.send(request("http://nowhere.example/hook"))
    finally:
        await sender.close()
    assert isinstance(result, Failure) and result.kind is FailureKind.DNS


async def test_the_guard_keeps_the_public_addresses_of_a_mixed_answer() -> None:
    guard = GuardedResolver(ScriptedResolver({"mixed.example": ["10.0.0.7", PUBLIC, "::1"]}))
    kept = await guard.resolve("mixed.example", 443, socket.AF_UNSPEC)
    assert [r["host"] for r in kept] == [PUBLIC]
    with pytest.raises(RefusedAddress, match=r"a private address \(10\.0\.0\.7\)"):
        await GuardedResolver(ScriptedResolver({"in.example": ["10.0.0.7", "fd00::1"]})).resolve(
            "in.example", 443, socket.AF_UNSPEC
        )


class Clock:
    """The monotonic clock a ``ReqwestSender`` expires its pins by."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_reqwest_judges_a_pinned_name_again_when_its_pin_expires(sink: Sink) -> None:
    # reqwest connects to the address csjd checked; once the pin is stale the name
    # is resolved and judged again, so a rebinding after the first delivery is refused
    url = f"http://rebind.example:{sink.port}/hook"
    dns = ScriptedResolver({"rebind.example": ["127.0.0.1"]})
    clock = Clock()
    sender = ReqwestSender(max_connections=4, allow_private=True, resolver=dns, monotonic=clock)
    guarded = ReqwestSender(max_connections=4, resolver=dns, monotonic=clock)
    try:
        first = await sender.send(request(url))
        dns.answers["rebind.example"] = ["127.0.0.2"]  # nothing listens there
        pinned = await sender.send(request(url))
        clock.now += PIN_TTL_S + 1
        moved = await sender.send(request(url))
        dns.answers["rebind.example"] = [PUBLIC]
        assert isinstance(await _unreachable(guarded, url), Failure)  # pinned to PUBLIC
        dns.answers["rebind.example"] = ["127.0.0.1"]
        clock.now += PIN_TTL_S + 1
        rebound = await guarded.send(request(url))
    finally:
        await sender.close()
        await guarded.close()
    assert isinstance(first, Response) and isinstance(pinned, Response)
    assert isinstance(moved, Failure) and moved.kind is FailureKind.CONNECTION_REFUSED, moved
    assert isinstance(rebound, Failure) and rebound.kind is FailureKind.PRIVATE_ADDRESS, rebound
    assert rebound.message.startswith("'rebind.example' resolves to a loopback address")
    assert len(sink.received("/hook")) == 2


async def _unreachable(sender: ReqwestSender, url: str) -> Response | Failure:
    # PUBLIC is not reachable from here: a short attempt is enough to pin it
    return await sender.send(Request(url=url, body=b"{}", headers={}, timeout_s=0.2))


class SlowResolver(ScriptedResolver):
    """Answers as ``ScriptedResolver`` does, after ``delay_s``; counts the lookups."""

    def __init__(self, answers: dict[str, list[str]], delay_s: float) -> None:
        super().__init__(answers)
        self.delay_s = delay_s
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups += 1
        await asyncio.sleep(self.delay_s)
        return await super().resolve(host, port, family)


async def test_reqwest_answers_everyone_waiting_on_a_name_when_one_gives_up(sink: Sink) -> None:
    # one lookup serves every sender to the name; the first sender's deadline
    # ends only its own wait, never the others' (nor does it raise into them)
    url = f"http://slow.example:{sink.port}/hook"
    dns = SlowResolver({"slow.example": ["127.0.0.1"]}, delay_s=0.3)
    sender = ReqwestSender(max_connections=4, allow_private=True, resolver=dns)
    try:
        short, patient = await asyncio.gather(
            sender.send(Request(url=url, body=b"{}", headers={}, timeout_s=0.1)),
            sender.send(Request(url=url, body=b"{}", headers={}, timeout_s=3.0)),
        )
    finally:
        await sender.close()
    assert isinstance(short, Failure) and short.kind is FailureKind.TIMEOUT, short
    assert isinstance(patient, Response) and patient.status == 200, patient
    assert dns.lookups == 1
    assert len(sink.received("/hook")) == 1
