"""A seeded chaos run: producers, misbehaving targets and faults, then the history checked.

``Chaos`` registers one target per kind of peer (an honest sink, a flaky one
answering a seeded mix of 2xx, 5xx and 429, one answering binary bytes, one
answering bytes that are not HTTP, one that hangs), sends jobs from several
producer threads to whichever gateways are up (a producer retries a 503 or a
lost connection with the same key, as the contract invites; a job of a
few seconds' life sent again past its ``expires_at`` is refused, and the
producer takes that answer), while the test
injects faults. ``check`` then reads every job and its attempts and asserts
the guarantee as a producer and a target would see it:

- every job answered ``202`` is terminal;
- it ``succeeded`` exactly when its target acknowledged it (a 2xx);
- each job's deliveries are at most its counted attempts, plus its throttled
  ones, plus one per fault it may have been in flight at;
- no producer ever got a ``500``.

``check_counts`` asserts that the per-target counts the writes keep
(``app/storage/counts.py``) are still the jobs' own, gateways killed mid-write
and all, without maintenance having had to correct one.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from app.testing import Reply, Sink
from tests.e2e.gateway import GatewayProcess
from tests.faults.targets import HostileTarget

TERMINAL = ("succeeded", "failed", "cancelled")
#: how long a producer keeps sending one job again (503, connection lost)
PERSIST_S = 60.0
#: jobs to targets that never answer well expire this soon
EXPIRE_S = 6.0


@dataclass
class History:
    accepted: dict[str, str] = field(default_factory=dict)  # job id -> target
    statuses: Counter[int] = field(default_factory=Counter)
    replays: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Chaos:
    def __init__(self, seed: int, sink: Sink, binary: HostileTarget, garbage: HostileTarget,
                 hung: HostileTarget) -> None:  # fmt: skip
        self.rng = random.Random(seed)
        self.sink = sink
        self.binary = binary
        self.garbage = garbage
        self.hung = hung
        self.history = History()
        # the flaky target's answers, drawn once from the seed
        # mostly 2xx, so that its breaker stays closed and its jobs end soon
        answers = (
            [Reply(200)] * 14 + [Reply(500)] * 3 + [Reply(429, headers={"Retry-After": "1"})] * 3
        )
        flaky = [self.rng.choice(answers) for _ in range(5000)]
        sink.script("/flaky", flaky, Reply(200))
        sink.answer("/ok", Reply(200))

    def register(self, gateway: GatewayProcess) -> None:
        quick = {"backoff_initial_s": 0.2, "backoff_max_s": 1.0}
        gateway.put_target("ok", url=self.sink.url("/ok"), **quick)
        # up to 20 counted attempts: an acknowledged job cannot plausibly run out
        gateway.put_target("flaky", url=self.sink.url("/flaky"), max_attempts=20, **quick)
        gateway.put_target("binary", url=self.binary.url(), **quick)
        gateway.put_target("garbage", url=self.garbage.url(), max_attempts=2, **quick)
        gateway.put_target("hung", url=self.hung.url(), max_attempts=2, timeout_s=1, **quick)

    TARGETS = ("ok", "ok", "flaky", "flaky", "binary", "garbage", "hung")

    def produce(
        self, gateways: Callable[[], Sequence[GatewayProcess]], worker: int, jobs: int
    ) -> None:
        rng = random.Random(self.rng.random() + worker)
        with httpx.Client(timeout=10) as client:
            for i in range(jobs):
                key = f"w{worker}-{i}"
                target = rng.choice(self.TARGETS)
                body: dict[str, Any] = {"target": target, "payload": {"worker": worker, "i": i}}
                if target in ("garbage", "hung"):
                    # their breakers open and park the jobs; they end when they expire
                    expires = datetime.fromtimestamp(time.time() + EXPIRE_S, UTC)
                    body["expires_at"] = expires.isoformat()
                self._send(client, gateways, rng, key, body)
                if rng.random() < 0.1:  # a producer that sends the same job twice
                    self._send(client, gateways, rng, key, body)
                time.sleep(rng.uniform(0.1, 0.4))  # paced: the load spans the faults

    def _send(
        self,
        client: httpx.Client,
        gateways: Callable[[], Sequence[GatewayProcess]],
        rng: random.Random,
        key: str,
        body: dict[str, Any],
    ) -> None:
        deadline = time.monotonic() + PERSIST_S
        while True:
            assert time.monotonic() < deadline, f"job {key} never got an answer"
            up = gateways()
            if not up:
                time.sleep(0.1)
                continue
            gateway = rng.choice(up)
            try:
                response = client.post(
                    f"{gateway.client.base_url}/jobs", json=body, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError:
                time.sleep(0.1)  # the gateway died or is restarting: send it again
                continue
            with self.history.lock:
                self.history.statuses[response.status_code] += 1
            if response.status_code == 503:
                time.sleep(min(1.0, float(response.headers.get("retry-after", "1"))))
                continue
            if response.status_code == 422 and "expires_at" in body:
                # sent again for longer than the job's short life: refused as a new
                # job (nothing was stored), as a producer would be told
                errors = response.json().get("errors") or [{}]
                assert errors[0].get("loc") == ["body", "expires_at"], response.text
                return
            assert response.status_code == 202, response.text
            with self.history.lock:
                self.history.accepted[response.json()["id"]] = body["target"]
                self.history.replays += response.headers.get("idempotent-replayed") == "true"
            return

    # -- after the run -----------------------------------------------------------------

    def wait_terminal(self, gateway: GatewayProcess, timeout: float) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        ended: dict[str, dict[str, Any]] = {}
        while True:
            for job_id in self.history.accepted:
                if job_id not in ended:
                    job = gateway.job(job_id)
                    if job["state"] in TERMINAL:
                        ended[job_id] = job
            if len(ended) == len(self.history.accepted):
                return ended
            if time.monotonic() > deadline:
                targets = gateway.client.get("/targets").json()
                states = {t["name"]: t.get("state") for t in targets}
                left = Counter(
                    (gateway.job(j)["state"], t)
                    for j, t in self.history.accepted.items()
                    if j not in ended
                )
                raise AssertionError(f"jobs answered 202 never ended: {left}; targets: {states}")
            time.sleep(0.25)

    def deliveries(self) -> tuple[Counter[str], set[str]]:
        """Requests per job id, and the ids a target acknowledged (2xx)."""
        sent: Counter[str] = Counter()
        acknowledged: set[str] = set()
        for received in self.sink.received("/ok") + self.sink.received("/flaky"):
            job_id = received.headers["webhook-id"]
            sent[job_id] += 1
            if 200 <= received.status < 300:
                acknowledged.add(job_id)
        for seen in self.binary.received():  # it answers 200 to everything
            sent[seen.headers["webhook-id"]] += 1
            acknowledged.add(seen.headers["webhook-id"])
        for hostile in (self.garbage, self.hung):
            sent.update(seen.headers["webhook-id"] for seen in hostile.received())
        return sent, acknowledged

    def check(self, gateway: GatewayProcess, *, faults: int, timeout: float = 120) -> None:
        h = self.history
        assert h.statuses[500] == 0 and set(h.statuses) <= {202, 422, 503}, h.statuses
        ended = self.wait_terminal(gateway, timeout)
        sent, acknowledged = self.deliveries()
        wrong: list[str] = []
        for job_id, job in ended.items():
            succeeded = job["state"] == "succeeded"
            if succeeded != (job_id in acknowledged):
                wrong.append(
                    f"{job_id} ({job['target']}) {job['state']}, acknowledged: {not succeeded}"
                )
                continue
            attempts = gateway.client.get(f"/jobs/{job_id}/attempts").json()
            throttled = sum(a["outcome"] == "throttled" for a in attempts)
            if sent[job_id] > job["attempts"] + throttled + faults:
                wrong.append(
                    f"{job_id} ({job['target']}) sent {sent[job_id]} times for "
                    f"{job['attempts']} counted and {throttled} throttled attempts"
                )
        assert not wrong, "\n".join(wrong[:20])
        # nothing was sent that no producer asked for
        assert set(sent) <= set(ended)

    def check_counts(self, gateway: GatewayProcess, gateways: Sequence[GatewayProcess]) -> None:
        """After ``check``: no backlog is left, and each target's minutes say as many
        jobs accepted, succeeded and failed as the jobs stored say (none is retried
        here, so each finished once); no gateway's maintenance corrected a count."""
        client = gateway.client
        for target in client.get("/targets").json():
            assert set(target["state"]["backlog"].values()) == {0}, target
        live = client.get("/ui/live.json").json()
        wrong = []
        for target in live["targets"]:
            name = target["name"]
            shown = {kind: s["total"] for kind, s in target["throughput"].items()}
            stored = {
                "accepted": client.get("/jobs/count", params={"target": name}).json()["count"],
                **{
                    state: client.get(
                        "/jobs/count", params={"target": name, "state": state}
                    ).json()["count"]
                    for state in ("succeeded", "failed")
                },
            }
            if shown != stored:
                wrong.append(f"{name}: the minutes say {shown}, the jobs {stored}")
        assert not wrong, "\n".join(wrong)
        for each in gateways:
            assert "backlog_counts_repaired" not in each.logs()
