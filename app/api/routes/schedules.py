"""``/schedules``: cron schedules that make a job for a target at each fire time.

An admin's routes (``app/api/auth.py``), shaped as ``/targets`` is: ``PUT``
creates (``201``) or replaces (``200``) the whole schedule, ``GET`` reads one
or every one with when it fires next and what its last fire did, ``DELETE``
removes it (``204``). A body is checked entirely before anything is stored:
the cron expression and time zone (``app/core/schedule.py``), the payload and
headers as ``POST /jobs`` checks them, and that the target exists. What a
fire does is ``app/dispatch/schedules.py``'s.
"""

from __future__ import annotations

from datetime import datetime

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator
from starlette.responses import Response

from app.api.deps import GatewayDep
from app.api.present import schedule_json
from app.api.problems import documented
from app.api.routes.targets import NamePath
from app.api.schemas import NAME_PATTERN, Delivered
from app.core.errors import NotFound, UnknownTarget
from app.core.schedule import (
    MAX_CRON_CHARS,
    MAX_TIMEZONE_CHARS,
    Cron,
    ScheduleSpec,
    first_run,
    parse_zone,
)

router = APIRouter(tags=["schedules"])

CRON_DESCRIPTION = (
    "Five fields (minute hour day-of-month month day-of-week), or six with seconds "
    "first, as Debian's cron reads them; also @hourly, @daily, @weekly, @monthly, "
    "@yearly. Each fire time makes one job, idempotency key "
    "schedule:<name>:<fire time, RFC 3339 UTC>, caller schedule:<name>"
)
PUT_DESCRIPTION = (
    "Replaces the whole schedule (what its last fire did is kept). It fires first at "
    "its next fire time after this request. At each fire time the leading gateway "
    "stores one job for the target, as POST /jobs would (target, backlog bound and "
    "idempotency apply); fire times missed while no gateway ran make one job, for the "
    "latest of them. A fire whose target is disabled or gone makes no job: the "
    "schedule shows why in last_error and fires again at its next time."
)


class ScheduleIn(Delivered):
    """A schedule (``PUT /schedules/{name}``)."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(max_length=MAX_CRON_CHARS, description=CRON_DESCRIPTION)
    timezone: str = Field(
        default="UTC",
        max_length=MAX_TIMEZONE_CHARS,
        description="The IANA time zone the fields are read in, such as Europe/Paris",
    )
    target: str = Field(pattern=NAME_PATTERN, description="A registered target's name")
    payload: JsonValue = Field(description="Each job's payload, as POST /jobs takes it")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Each job's own headers, as POST /jobs takes them"
    )
    enabled: bool = Field(default=True, description="A disabled schedule does not fire")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        Cron.parse(value, "UTC")  # its fire times depend on the zone, its validity not
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        parse_zone(value)
        return value

    def to_spec(self, name: str) -> ScheduleSpec:
        return ScheduleSpec(
            name=name,
            cron=self.cron,
            timezone=self.timezone,
            target=self.target,
            payload=orjson.dumps(self.payload),
            headers=dict(self.headers),
            enabled=self.enabled,
        )


class ScheduleOut(BaseModel):
    name: str
    cron: str
    timezone: str
    target: str
    payload: JsonValue
    headers: dict[str, str]
    enabled: bool
    next_run_at: datetime | None = Field(
        description="Its next fire time; null while it is disabled"
    )
    last_run_at: datetime | None = Field(
        description="The last fire time it came to, whether or not that made a job"
    )
    last_job_id: str | None = Field(description="The job its last fire made")
    last_error: str | None = Field(description="Why its last fire made no job")
    created_at: datetime
    updated_at: datetime


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@router.put(
    "/schedules/{name}",
    response_model=ScheduleOut,
    summary="Create or replace a schedule",
    description=PUT_DESCRIPTION,
    responses={
        201: {"model": ScheduleOut, "description": "Created"},
        **documented(400, 413, 415, 422),
    },
)
async def put_schedule(name: NamePath, body: ScheduleIn, gateway: GatewayDep) -> Response:
    if await gateway.store.get_target(body.target) is None:
        raise UnknownTarget(
            f"no target named '{body.target}': register it first (PUT /targets/{body.target})",
            extensions={"target": body.target},
        )
    spec = body.to_spec(name)
    now = gateway.clock.now()
    record, created = await gateway.store.put_schedule(spec, first_run(spec, now), now)
    return _json(schedule_json(record), 201 if created else 200)


@router.get("/schedules", response_model=list[ScheduleOut], summary="Every schedule")
async def list_schedules(gateway: GatewayDep) -> Response:
    return _json([schedule_json(s) for s in await gateway.store.list_schedules()])


@router.get(
    "/schedules/{name}",
    response_model=ScheduleOut,
    summary="One schedule, with its next and last fire",
    responses=documented(404, 422),
)
async def get_schedule(name: NamePath, gateway: GatewayDep) -> Response:
    record = await gateway.store.get_schedule(name)
    if record is None:
        raise NotFound(f"no schedule named '{name}'")
    return _json(schedule_json(record))


@router.delete(
    "/schedules/{name}",
    status_code=204,
    summary="Remove a schedule (the jobs it made stay)",
    responses=documented(404, 422),
)
async def delete_schedule(name: NamePath, gateway: GatewayDep) -> Response:
    await gateway.store.delete_schedule(name)
    return Response(status_code=204)
