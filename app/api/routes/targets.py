"""``/targets``: registering, reading and removing webhook targets."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path
from starlette.responses import Response

from app.api.deps import GatewayDep
from app.api.present import target_json
from app.api.problems import documented
from app.api.schemas import NAME_PATTERN, TargetIn, TargetOut
from app.core.errors import NotFound
from app.core.target import TargetRecord
from app.net import check_target_url

router = APIRouter(tags=["targets"])

NamePath = Annotated[str, Path(pattern=NAME_PATTERN, description="^[a-z0-9][a-z0-9._-]{0,62}$")]


async def _present(gateway: GatewayDep, targets: list[TargetRecord]) -> list[dict[str, object]]:
    backlog = await gateway.store.backlog_by_target()
    now = gateway.clock.now()
    return [
        target_json(
            t,
            live=gateway.dispatcher.live_state(t.name),
            backlog=backlog.get(t.name, {}),
            now=now,
        )
        for t in targets
    ]


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@router.put(
    "/targets/{name}",
    response_model=TargetOut,
    summary="Create or replace a target",
    responses={
        201: {"model": TargetOut, "description": "Created"},
        **documented(400, 413, 415, 422),
    },
)
async def put_target(name: NamePath, body: TargetIn, gateway: GatewayDep) -> Response:
    spec = body.to_spec(name)
    await check_target_url(spec.url, allow_private=gateway.settings.allow_private_targets)
    record, created = await gateway.store.put_target(spec, gateway.clock.now())
    gateway.dispatcher.targets_changed()
    return _json((await _present(gateway, [record]))[0], 201 if created else 200)


@router.get("/targets", response_model=list[TargetOut], summary="Every target")
async def list_targets(gateway: GatewayDep) -> Response:
    return _json(await _present(gateway, await gateway.store.list_targets()))


@router.get(
    "/targets/{name}",
    response_model=TargetOut,
    summary="One target, with its live state",
    responses=documented(404, 422),
)
async def get_target(name: NamePath, gateway: GatewayDep) -> Response:
    record = await gateway.store.get_target(name)
    if record is None:
        raise NotFound(f"no target named '{name}'")
    return _json((await _present(gateway, [record]))[0])


@router.delete(
    "/targets/{name}",
    status_code=204,
    summary="Remove a target that has no unfinished jobs",
    responses=documented(404, 409, 422),
)
async def delete_target(name: NamePath, gateway: GatewayDep) -> Response:
    await gateway.store.delete_target(name)
    gateway.dispatcher.targets_changed()
    return Response(status_code=204)
