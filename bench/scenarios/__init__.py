"""Every scenario by its ``--scenario`` name, in the order ``--help`` lists
them, and the sets ``cli`` checks the flags and ``all`` against: what ``all``
runs and in which order, what needs SQLite, what always runs one csjd. Each
scenario is a module of its own here and builds its JSON line through
``bench.harness.lines.scenario``.
"""

from __future__ import annotations

from bench.scenarios import (
    big_backlog,
    dashboard,
    drain,
    end_to_end,
    intake,
    outage,
    soak,
    trace,
)

SCENARIOS = {
    "end_to_end": end_to_end.SCENARIO,
    "outage": outage.SCENARIO,
    "intake": intake.SCENARIO,
    "batch_intake": intake.BATCH,
    "drain": drain.SCENARIO,
    "big_backlog": big_backlog.QUEUED,
    "big_backlog_scheduled": big_backlog.SCHEDULED,
    "soak": soak.SCENARIO,
    "dashboard": dashboard.SCENARIO,
    "trace": trace.SCENARIO,
}
#: what ``--scenario all`` runs, in this order (the soak takes its 10 minutes only on demand)
IN_ALL = (
    "end_to_end",
    "outage",
    "intake",
    "batch_intake",
    "drain",
    "big_backlog",
    "big_backlog_scheduled",
    "dashboard",
)
#: scenarios that seed a SQLite file directly, skipped by ``all`` with ``--db postgres``
SQLITE_ONLY = ("dashboard",)
#: scenarios that run one csjd, whatever --split and --replicas say
ONE_CSJD = (
    "intake",
    "batch_intake",
    "drain",
    "big_backlog",
    "big_backlog_scheduled",
    "soak",
    "dashboard",
    "trace",
)
