"""A scenario's JSON line: nearest-rank percentiles for its latencies, where
and when it ran, and ``scenario``, which runs a scenario and then its
ceilings and puts together its one line, keys in this order: its name and
flags, its figures, the ceilings and ratios (for scenarios that measure any),
the machine, then ``detail``. Printing the line is ``cli``'s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import subprocess
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from bench.harness.ceilings import CeilingSpec, measure_ceilings
from bench.harness.procs import BENCH_DIR, Service


def percentiles(values: list[float], points: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles (and the max), rounded to 0.01."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {f"p{p:g}": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in points}
    out["max"] = ordered[-1]
    return {k: round(v, 2) for k, v in out.items()}


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine(load_avg: list[float], loop_name: str) -> dict[str, Any]:
    """Where and when a scenario ran."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_avg_at_start": load_avg,
        "platform": platform.platform(),
        "loop": loop_name,
        "commit": git_commit(),
    }


def load_avg_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def scenario_line(
    scenario: str,
    fields: dict[str, Any],
    result: dict[str, Any],
    load_avg: list[float],
    loop_name: str,
    measured: tuple[dict[str, float] | None, dict[str, float] | None] | None = None,
) -> dict[str, Any]:
    """One scenario's JSON line: its name and flags, its figures, the ceilings and
    ratios of scenarios that measure any, the machine, then the detail.

    A scenario that measures ceilings may have ratios of its own (between its
    figures); they come first in ``ratios``, and stay with ``--skip-ceilings``.
    """
    detail = result.pop("detail")
    line = {"scenario": scenario, **fields, **result}
    if measured is not None:
        own = line.pop("ratios", None)
        line["ceilings"], ratios = measured
        line["ratios"] = {**own, **(ratios or {})} if own else ratios
    return {**line, **machine(load_avg, loop_name), "detail": detail}


def one_csjd(args: argparse.Namespace) -> dict[str, Any]:
    return {"db": args.db, "replicas": 1}


Run = Callable[[argparse.Namespace, Path, Service], Coroutine[Any, Any, dict[str, Any]]]
ScenarioRunner = Callable[
    [argparse.Namespace, Path, Service, str], Coroutine[Any, Any, dict[str, Any]]
]


def scenario(
    name: str,
    run: Run,
    fields: Callable[[argparse.Namespace], dict[str, Any]] = one_csjd,
    ceilings: CeilingSpec | None = None,
) -> ScenarioRunner:
    """A scenario as ``cli.bench`` runs it: its figures, then its ceilings, as one JSON line."""

    async def runner(
        args: argparse.Namespace, tmp: Path, sink: Service, loop_name: str
    ) -> dict[str, Any]:
        load_avg = load_avg_now()
        result = await run(args, tmp, sink)
        measured = None
        if ceilings is not None:
            measured = await measure_ceilings(args, tmp, sink, result, ceilings)
        return scenario_line(name, fields(args), result, load_avg, loop_name, measured)

    return runner
