"""The harness every scenario shares, one module per concern: ``procs`` (child
processes and what ``/proc`` says of them), ``gateway`` (csjd: its database, its
process, its targets and its log), ``loadgen`` (the load generator),
``sink_client`` (the sink's controls and waiting for deliveries), ``ceilings``
(the two ceilings) and ``lines`` (percentiles and the JSON line). This module
holds only what all of them use: ``BenchError``, which fails the run with a
reason, and ``say``, the progress line on stderr.
"""

from __future__ import annotations

import sys


class BenchError(RuntimeError):
    """The benchmark could not produce a valid result; the message says why."""


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)
