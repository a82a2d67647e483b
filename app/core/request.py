"""The request one delivery sends: what csjd says, signed, then what the target and the job add.

``request_for`` is the whole of it, byte for byte: the body is the job's
payload as stored, and the headers come in a fixed order, the Standard
Webhooks ones first (``webhook-id``, ``webhook-timestamp``, and
``webhook-signature`` when the target has a secret, see ``signing.py``), then
``idempotency-key`` and ``csjd-attempt``, then the target's headers, then the
job's, a later name replacing an earlier one whatever its case (``headers.py``
keeps targets and jobs from naming the ones csjd owns), then the attempt's own
``traceparent`` in place of the one the job keeps (``trace.py``: the job's
trace under a parent id new for each attempt). ``Request`` lives here,
not beside the sender that takes it, so that building it stays pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app import __version__
from app.core.job import JobRecord
from app.core.signing import sign
from app.core.target import TargetSpec
from app.core.trace import TRACEPARENT

USER_AGENT = f"csjd/{__version__}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    url: str
    body: bytes
    headers: Mapping[str, str]
    timeout_s: float


def request_for(
    job: JobRecord, target: TargetSpec, now: float, *, traceparent: str | None = None
) -> Request:
    """The request ``job``'s current delivery (``job.delivery``) sends to ``target`` at
    ``now``, carrying ``traceparent`` when the attempt has one."""
    timestamp = int(now)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": job.id,
        "webhook-timestamp": str(timestamp),
    }
    if target.secret:
        headers["webhook-signature"] = sign(target.secret, job.id, timestamp, job.payload)
    headers["idempotency-key"] = job.id
    headers["csjd-attempt"] = str(job.delivery)
    if target.headers:
        _merge(headers, target.headers)
    if job.headers:
        _merge(headers, job.headers)
    if traceparent is not None:
        _merge(headers, {TRACEPARENT: traceparent})
    return Request(url=target.url, body=job.payload, headers=headers, timeout_s=target.timeout_s)


def _merge(headers: dict[str, str], extra: Mapping[str, str]) -> None:
    """Add ``extra`` headers; a later name replaces an earlier one whatever its case."""
    for name, value in extra.items():
        lower = name.lower()
        for existing in [k for k in headers if k.lower() == lower]:
            del headers[existing]
        headers[name] = str(value)
