"""The load generator: ``POST /jobs`` over ``http1`` keep-alive connections,
either as fast as ``--concurrency`` workers go (``post_jobs``) or paced at a
rate (``offer_paced``), or the same jobs a batch at a time through ``POST
/jobs/batch`` (``post_batches``), recording per job when it was sent, when it
was answered and the id it got, per request its round trip, and its own CPU
(``Intake``); then the
enqueue-to-delivery latencies from an ``Intake`` and the sink's arrival
times, and what went wrong, on stderr. It also makes the aiohttp sessions the
benchmark drives everything else through; it never starts a process.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import orjson

from bench import http1
from bench.harness import BenchError, say

REQUEST_TIMEOUT_S = 120.0
#: workers sharing a paced load (outage, soak), so that a slow answer does not hold up the pacing
PACED_WORKERS = 32


def client_session(concurrency: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


@dataclass
class Intake:
    """What the load generator saw: per job, when it was sent and the id it got."""

    jobs: int
    send_at: list[float]
    answered_at: list[float]
    ids: list[str | None]
    wall_s: float
    cpu_s: float
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    #: paced load only: the latest a POST went out after its due time
    max_lag_s: float = 0.0
    #: per request answered (one job, or one batch), its round trip (ms)
    request_ms: list[float] = field(default_factory=list)
    #: jobs carry one of this many ordering keys (job ``i`` the key ``k<i % n>``); 0: none
    ordering_keys: int = 0

    @classmethod
    def empty(cls, jobs: int) -> Intake:
        return cls(
            jobs=jobs,
            send_at=[0.0] * jobs,
            answered_at=[0.0] * jobs,
            ids=[None] * jobs,
            wall_s=0.0,
            cpu_s=0.0,
        )

    @property
    def accepted(self) -> int:
        return self.jobs - self.errors

    def post_latencies_ms(self) -> list[float]:
        """Per accepted job: the ``POST /jobs`` round trip (ms)."""
        return [
            (self.answered_at[i] - self.send_at[i]) * 1000
            for i, job_id in enumerate(self.ids)
            if job_id is not None
        ]

    def error(self, what: str, jobs: int = 1) -> None:
        self.errors += jobs
        if len(self.error_samples) < 5:
            self.error_samples.append(what)

    async def post(
        self, client: http1.Client, url: str, i: int, target: str, key: str, traced: bool = False
    ) -> None:
        """POST job ``i``; it counts as accepted only when answered ``202`` with an ``id``.
        ``traced``: with a ``traceparent`` header of its own (trace ``i + 1``)."""
        job: dict[str, object] = {"target": target, "payload": {"i": i}}
        if self.ordering_keys:
            job["ordering_key"] = f"k{i % self.ordering_keys}"
        body = orjson.dumps(job)
        headers = {"content-type": "application/json", "idempotency-key": key}
        if traced:
            headers["traceparent"] = f"00-{i + 1:032x}-{i + 1:016x}-01"
        self.send_at[i] = time.time()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, raw = await client.post(url, body, headers)
        except (OSError, TimeoutError) as exc:
            self.error(f"job {i}: {type(exc).__name__}: {exc}")
            return
        self.answered_at[i] = time.time()
        self.request_ms.append((self.answered_at[i] - self.send_at[i]) * 1000)
        if status != 202:
            self.error(f"job {i}: HTTP {status}: {raw[:200]!r}")
            return
        try:
            self.ids[i] = str(orjson.loads(raw)["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.error(f"job {i}: 202 without an id: {raw[:200]!r}")

    async def post_batch(
        self, client: http1.Client, url: str, indexes: range, target: str, key_prefix: str
    ) -> None:
        """POST jobs ``indexes`` as one ``POST /jobs/batch``, each with its own
        ``idempotency_key`` (``<key_prefix>-<i>``) and the body ``post`` sends.

        A job counts as accepted only when its result is ``202`` with a job
        ``id``; a request that fails as a whole fails each of its jobs.
        """
        items = [
            {"idempotency_key": f"{key_prefix}-{i}", "target": target, "payload": {"i": i}}
            for i in indexes
        ]
        body = orjson.dumps({"jobs": items})
        sent_at = time.time()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, raw = await client.post(url, body, {"content-type": "application/json"})
        except (OSError, TimeoutError) as exc:
            self.error(f"batch from job {indexes[0]}: {type(exc).__name__}: {exc}", len(indexes))
            return
        answered_at = time.time()
        self.request_ms.append((answered_at - sent_at) * 1000)
        try:
            results = orjson.loads(raw)["results"] if status == 200 else None
        except (orjson.JSONDecodeError, KeyError, TypeError):
            results = None
        if not isinstance(results, list) or len(results) != len(indexes):
            self.error(f"batch from job {indexes[0]}: HTTP {status}: {raw[:200]!r}", len(indexes))
            return
        for i, result in zip(indexes, results, strict=True):
            self.send_at[i], self.answered_at[i] = sent_at, answered_at
            accepted = isinstance(result, dict) and result.get("status") == 202
            job = result.get("job") if accepted else None
            job_id = job.get("id") if isinstance(job, dict) else None
            if job_id is None:
                self.error(f"job {i}: {orjson.dumps(result)[:200]!r}")
            else:
                self.ids[i] = str(job_id)


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def post_jobs(
    urls: Sequence[str],
    jobs: int,
    concurrency: int,
    target: str = "bench",
    key_prefix: str = "bench",
    ordering_keys: int = 0,
    *,
    traced: bool = False,
) -> Intake:
    """POST ``jobs`` jobs, round-robin over ``urls``, from ``concurrency`` workers on one session.

    Job ``i`` goes to ``urls[i % len(urls)]`` and carries ``Idempotency-Key:
    <key_prefix>-<i>`` (with ``ordering_keys`` the ordering key ``k<i % n>``, with
    ``traced`` a ``traceparent``); a job counts as accepted only when answered
    ``202`` with an ``id``. Anything else is an error.
    """
    result = Intake.empty(jobs)
    result.ordering_keys = ordering_keys
    indexes = iter(range(jobs))  # shared by the workers: each takes the next job

    async def worker() -> None:
        client = http1.Client()  # one keep-alive connection per worker and host
        try:
            for i in indexes:
                url, key = urls[i % len(urls)], f"{key_prefix}-{i}"
                await result.post(client, url, i, target, key, traced)
        finally:
            client.close()

    cpu0, t0 = own_cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - t0
    result.cpu_s = own_cpu_s() - cpu0
    return result


async def post_batches(
    url: str,
    jobs: int,
    batch_size: int,
    concurrency: int,
    target: str = "bench",
    key_prefix: str = "bench",
) -> Intake:
    """POST ``jobs`` jobs to ``url`` (``…/jobs/batch``), ``batch_size`` to a request,
    from ``concurrency`` workers on one session.

    The jobs are those ``post_jobs`` sends, keys and bodies alike; each worker
    takes the next ``batch_size`` of them (the last batch may be smaller).
    """
    result = Intake.empty(jobs)
    batches = iter([range(low, min(jobs, low + batch_size)) for low in range(0, jobs, batch_size)])

    async def worker() -> None:
        client = http1.Client()
        try:
            for indexes in batches:
                await result.post_batch(client, url, indexes, target, key_prefix)
        finally:
            client.close()

    cpu0, t0 = own_cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - t0
    result.cpu_s = own_cpu_s() - cpu0
    return result


async def sleep_until(due: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``due`` (at once if it has)."""
    delay = due - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def offer_paced(
    url: str, *, rate: float, duration_s: float, start: float, target: str, workers: int
) -> Intake:
    """Offer ``rate`` jobs per second for ``duration_s`` from ``start`` (monotonic).

    Job ``i`` is due at ``start + i / rate`` and carries ``Idempotency-Key:
    <target>-<i>``. ``workers`` workers each take the next job, sleep until it
    is due and send it, so a slow answer holds up only its own worker; when
    every worker is waiting on an answer, jobs go out late (``max_lag_s``).
    """
    jobs = max(1, round(rate * duration_s))
    result = Intake.empty(jobs)
    indexes = iter(range(jobs))

    async def worker() -> None:
        client = http1.Client()
        try:
            for i in indexes:
                due = start + i / rate
                await sleep_until(due)
                result.max_lag_s = max(result.max_lag_s, time.monotonic() - due)
                await result.post(client, url, i, target, f"{target}-{i}")
        finally:
            client.close()

    cpu0 = own_cpu_s()
    await asyncio.gather(*(worker() for _ in range(workers)))
    result.wall_s = time.monotonic() - start
    result.cpu_s = own_cpu_s() - cpu0
    return result


def delivery_latencies(intake: Intake, first_at: dict[str, float]) -> list[tuple[float, float]]:
    """Per accepted job: (when its POST was sent, enqueue-to-delivery in ms).

    Enqueue to delivery is the sink's first arrival of the job minus the
    ``time.time()`` its POST was sent; fails if an accepted job never arrived.
    """
    out: list[tuple[float, float]] = []
    missing = 0
    for i, job_id in enumerate(intake.ids):
        if job_id is None:
            continue
        arrived = first_at.get(job_id)
        if arrived is None:
            missing += 1
            continue
        out.append((intake.send_at[i], (arrived - intake.send_at[i]) * 1000))
    if missing:
        raise BenchError(f"{missing} accepted job ids never reached the sink")
    return out


def report_intake(intake: Intake) -> None:
    say(f"intake done in {intake.wall_s:.2f}s: {intake.accepted} accepted, {intake.errors} errors")
    report_errors(intake)


def report_paced(intake: Intake) -> None:
    say(
        f"load done: {intake.accepted} of {intake.jobs} accepted, {intake.errors} errors, "
        f"sent at most {intake.max_lag_s * 1000:.0f} ms late"
    )
    report_errors(intake)


def report_errors(intake: Intake) -> None:
    """Say what went wrong with a few of the POSTs; fail the run if none was accepted."""
    for sample in intake.error_samples:
        say(f"  error: {sample}")
    if intake.accepted == 0:
        raise BenchError("csjd accepted no job")
