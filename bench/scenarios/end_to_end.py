"""The ``end_to_end`` scenario, the default: target ``bench`` is the sink's
``/hook``, ``--jobs`` jobs are pushed over ``--concurrency`` connections and
the scenario waits until the sink has seen every accepted job, for
throughput, enqueue-to-delivery latency, and csjd's CPU and RSS. With
``--replicas N`` (Postgres only) N ``csjd serve`` share the database and the
POSTs go to them round-robin; with ``--split`` one ``--role api`` process
takes the intake and one ``--role dispatcher`` process delivers; with
``--workers 2`` one ``csjd serve --workers 2`` does the same from one command
(its CPU and RSS are its own and its workers'). Then both
ceilings (bare FastAPI, the outbound client) are measured, one after the
other.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import orjson

from bench.harness import say
from bench.harness.ceilings import BARE_FASTAPI, OUTBOUND_CLIENT, OUTBOUND_REQWEST
from bench.harness.gateway import (
    fresh_database,
    put_target,
    report_log,
    start_csjd,
    wait_workers,
)
from bench.harness.lines import percentiles, scenario
from bench.harness.loadgen import client_session, delivery_latencies, post_jobs, report_intake
from bench.harness.procs import (
    CLEAN_EXITS,
    Service,
    children,
    report_exit,
    sample_proc,
    sample_tree,
)
from bench.harness.sink_client import sink_stats, wait_delivered


async def end_to_end(args: argparse.Namespace, tmp: Path, sink: Service) -> dict[str, Any]:
    replicas: int = args.replicas
    names = ["csjd"] if replicas == 1 else [f"csjd-{k}" for k in range(replicas)]
    # --split: one process takes the API (all the intake), another delivers
    roles = ["api", "dispatcher"] if args.split else ["all"] * replicas
    if args.split:
        names = ["csjd-api", "csjd-dispatcher"]
    gateways: list[Service] = []
    async with fresh_database(args, tmp, "bench.db") as database_url:
        try:
            async with client_session(8) as control:
                # The first one migrates the database alone and takes the target; the
                # others start after that, so each dispatcher knows the target from its
                # start (a target put elsewhere reaches it only at its next refresh).
                # --workers starts its dispatcher at once: it reads the target from
                # a targets file instead.
                target = {"url": f"{sink.base_url}/hook", "max_concurrency": 256}
                targets_file = tmp / "targets.json"
                targets_file.write_bytes(orjson.dumps([{"name": "bench", **target}]))
                gateways.append(
                    start_csjd(
                        tmp,
                        names[0],
                        database_url,
                        roles[0],
                        {"CSJD_TARGETS_FILE": str(targets_file)} if args.workers > 1 else None,
                        workers=args.workers,
                    )
                )
                await gateways[0].wait_ready(control, "/readyz")
                if args.workers > 1:
                    await wait_workers(gateways[0])  # the dispatcher too
                else:
                    await put_target(control, gateways[0], "bench", target)
                gateways.extend(
                    start_csjd(tmp, name, database_url, role)
                    for name, role in zip(names[1:], roles[1:], strict=True)
                )
                for gateway in gateways[1:]:
                    await gateway.wait_ready(control, "/readyz")
                at_ready = [sample_tree(gateway.proc.pid) for gateway in gateways]
                workers_at_ready = worker_cpu_s(gateways[0].proc.pid, args.workers)

                spread = f", round-robin over {replicas} replicas" if replicas > 1 else ""
                say(f"pushing {args.jobs} jobs over {args.concurrency} connections{spread}")
                intake_gateways = gateways[:1] if args.split else gateways
                urls = [gateway.base_url + "/jobs" for gateway in intake_gateways]
                intake = await post_jobs(
                    urls, args.jobs, args.concurrency, ordering_keys=args.ordering_keys
                )
                report_intake(intake)

                await wait_delivered(control, sink, gateways, intake.accepted, args.deadline)
                after = [sample_tree(gateway.proc.pid) for gateway in gateways]
                workers_after = worker_cpu_s(gateways[0].proc.pid, args.workers)
                stats = await sink_stats(control, sink, times=True)
            say("every accepted job was delivered; stopping csjd")
        finally:
            codes = list(await asyncio.gather(*(gateway.stop() for gateway in gateways)))
    for gateway, code in zip(gateways, codes, strict=True):
        report_exit(gateway, code)
    logs = [report_log(gateway) for gateway in gateways]

    first_at: dict[str, float] = stats["first_at"]
    latencies = [ms for _sent_at, ms in delivery_latencies(intake, first_at)]
    post_ms = intake.post_latencies_ms()
    first_send = min(intake.send_at)
    last_delivery = max(first_at.values())
    span_s = last_delivery - first_send
    cpu_s = sum(end.cpu_s - start.cpu_s for start, end in zip(at_ready, after, strict=True))
    per_replica = [
        {
            "name": gateway.name,
            "peak_rss_mb": round(end.peak_rss_mb, 1),
            "cpu_s": round(end.cpu_s - start.cpu_s, 2),
            "loop_cpu_s": round(end.loop_cpu_s - start.loop_cpu_s, 2),
            "rss_at_ready_mb": round(start.rss_mb, 1),
            "cpu_s_total": round(end.cpu_s, 2),
            "delivery_attempts_logged": summary.delivery_attempts,
            "warnings_logged": summary.warnings,
            "errors_logged": summary.errors,
            "other_log_lines": summary.other_lines,
            "exit_status": code,
        }
        for gateway, start, end, summary, code in zip(
            gateways, at_ready, after, logs, codes, strict=True
        )
    ]
    return {
        "accepted": intake.accepted,
        "errors": intake.errors,
        "accepted_per_s": round(intake.accepted / intake.wall_s, 1),
        "delivered_per_s": round(intake.accepted / span_s, 1),
        "enqueue_to_delivery_ms": percentiles(latencies),
        "post_latency_ms": percentiles(post_ms),
        "peak_rss_mb": round(sum(end.peak_rss_mb for end in after), 1),
        "cpu_s": round(cpu_s, 2),
        "cpu_ms_per_job": round(cpu_s * 1000 / intake.accepted, 3),
        "detail": {
            "intake_s": round(intake.wall_s, 3),
            "first_post_to_last_delivery_s": round(span_s, 3),
            "rss_at_ready_mb": round(sum(start.rss_mb for start in at_ready), 1),
            "csjd_cpu_s_total": round(sum(end.cpu_s for end in after), 2),
            # of cpu_ms_per_job, the event loops' (main threads') share; the rest is
            # the SQLite threads' and a delivery client's own thread's
            "loop_cpu_ms_per_job": round(
                sum(e.loop_cpu_s - s.loop_cpu_s for s, e in zip(at_ready, after, strict=True))
                * 1000
                / intake.accepted,
                3,
            ),
            "loadgen_cpu_s_intake": round(intake.cpu_s, 2),
            "sink_requests": stats["total"],
            "duplicate_deliveries": stats["total"] - stats["distinct"],
            # the first replica's, unless another one did not exit cleanly
            "csjd_exit_status": next((c for c in codes if c not in CLEAN_EXITS), codes[0]),
            "per_replica": per_replica,
            # --workers: each process's CPU over the run, by its --role, and the parent's
            "worker_cpu_s": {
                role: round(cpu_s - workers_at_ready.get(role, 0.0), 2)
                for role, cpu_s in workers_after.items()
            },
        },
    }


def worker_cpu_s(pid: int, workers: int) -> dict[str, float]:
    """CPU seconds so far of a ``csjd serve --workers`` (``parent``) and of each of
    its workers, by ``--role``; nothing for one process."""
    if workers == 1:
        return {}
    by_role = {"parent": sample_proc(pid).cpu_s}
    for child in children(pid):
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if b"--role" in argv:
            by_role[argv[argv.index(b"--role") + 1].decode()] = sample_proc(child).cpu_s
    return by_role


SCENARIO = scenario(
    "end_to_end",
    end_to_end,
    lambda args: {
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "db": args.db,
        "replicas": args.replicas,
        "split": args.split,
        "workers": args.workers,
        "ordering_keys": args.ordering_keys,
    },
    {
        BARE_FASTAPI: ("accepted_vs_bare_fastapi", "accepted_per_s"),
        OUTBOUND_CLIENT: ("delivered_vs_outbound_client", "delivered_per_s"),
        OUTBOUND_REQWEST: ("delivered_vs_outbound_reqwest", "delivered_per_s"),
    },
)
