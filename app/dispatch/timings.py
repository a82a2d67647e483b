"""How long the dispatcher waits for what, and why: production's numbers, in one place.

The claim loop (``loop.py``) and a delivery (``delivery.py``) read them from
the ``Timings`` the dispatcher is given, never from these constants, so a test
can shorten one (a heartbeat in milliseconds) without patching a module.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the longest the loop sleeps without being woken; jobs accepted elsewhere wake
#: it (Postgres NOTIFY, or the API process's datagram on SQLite), so this only
#: bounds the cost of a lost wake-up
IDLE_POLL_S = 1.0
#: a claim's lease; running attempts have theirs extended every HEARTBEAT_S
LEASE_S = 30.0
HEARTBEAT_S = 10.0
#: other gateways on a shared database change targets and pauses too
TARGET_REFRESH_S = 2.0
#: how long a stop waits for the loop to leave by itself (within one claim)
LOOP_EXIT_TIMEOUT_S = 5.0
#: the claim loop and the heartbeat try again this soon after the database failed them
UNAVAILABLE_PAUSE_S = 1.0
#: a result the database could not take is written again after this, doubling
WRITE_RETRY_FIRST_S = 0.1
WRITE_RETRY_MAX_S = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    idle_poll_s: float = IDLE_POLL_S
    lease_s: float = LEASE_S
    heartbeat_s: float = HEARTBEAT_S
    target_refresh_s: float = TARGET_REFRESH_S
    loop_exit_timeout_s: float = LOOP_EXIT_TIMEOUT_S
    unavailable_pause_s: float = UNAVAILABLE_PAUSE_S
    write_retry_first_s: float = WRITE_RETRY_FIRST_S
    write_retry_max_s: float = WRITE_RETRY_MAX_S


DEFAULT = Timings()
