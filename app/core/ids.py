"""Time-ordered job ids (UUIDv7, RFC 9562).

Ids sort by creation time, which keeps inserts at the end of the primary-key
index and lets ``GET /jobs`` page newest-first by id alone. Within one
millisecond a counter in the random bits keeps ids of one process increasing.
"""

from __future__ import annotations

import random
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0
# Ids need to be unique and time-ordered, not secret (jobs are scoped to their
# caller), so a fast generator seeded from the OS is enough.
_random = random.Random()


def uuid7(now_ms: int | None = None) -> str:
    global _last_ms, _counter
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            _counter += 1
            if _counter >= 1 << 12:  # counter exhausted: borrow the next millisecond
                ms += 1
                _counter = 0
        else:
            _counter = _random.getrandbits(10)
        _last_ms = ms
        counter = _counter
        rand = _random.getrandbits(62)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
