"""``/targets``: registering, changing, reading and removing webhook targets."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Path
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response

from app.api.deps import GatewayDep
from app.api.present import target_json
from app.api.problems import documented
from app.api.schemas import NAME_PATTERN
from app.api.target_schemas import TargetIn, TargetOut, TargetPatch
from app.core.errors import Conflict, NotFound
from app.core.target import TargetRecord, TargetSpec, disabled_reason
from app.gateway import Gateway
from app.net import check_target_url

router = APIRouter(tags=["targets"])

NamePath = Annotated[str, Path(pattern=NAME_PATTERN, description="^[a-z0-9][a-z0-9._-]{0,62}$")]
MERGE_PATCH = "application/merge-patch+json"
#: read-merge-write rounds a PATCH makes while other writers keep changing the target
PATCH_TRIES = 5


def _prose(text: str) -> str:
    """Paragraphs as single lines, as the schema's readers wrap them."""
    return "\n\n".join(" ".join(part.split()) for part in text.split("\n\n"))


PUT_DESCRIPTION = """\
Replaces the whole target: a field the body leaves out takes its default, so a
`secret` or `headers` not sent again are removed. To change some fields and keep
the rest (the secret and header values included), use `PATCH`."""

PATCH_DESCRIPTION = """\
Changes only the fields the body names, as a JSON merge patch (RFC 7396), sent
as `application/merge-patch+json` (another type: `415`). Fields not named keep
their values, the `secret` and header values included. Under `headers`, a name
with a value sets that header (names match whatever their case) and a name with
`null` removes it; other headers are kept.

`null` removes a field, which then takes its default, as if a `PUT` had left it
out: `secret: null` unsets the secret, `headers: null` removes every header,
`rate_limit_per_s: null` removes the limit, `enabled: null` enables the target,
`timeout_s: null` is 10 s again, and so on. `url` has no default: `url: null`
is refused.

The merged target must be valid as a `PUT` body is (the same limits, secret
format, URL policy and `backoff_max_s` ≥ `backoff_initial_s`), else `422` and
nothing changes. A change made by someone else between this request's read and
its write is never overwritten: the patch is applied again to the newer target
(`409` if other writers keep changing it). Naming `enabled` sets the reason a
disabled target shows, as `PUT` does; otherwise a target disabled after a `410`
keeps its reason."""


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
    description=_prose(PUT_DESCRIPTION),
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


@router.patch(
    "/targets/{name}",
    response_model=TargetOut,
    summary="Change some of a target's fields",
    description=_prose(PATCH_DESCRIPTION),
    responses=documented(400, 404, 409, 413, 415, 422),
)
async def patch_target(
    name: NamePath,
    patch: Annotated[TargetPatch, Body(media_type=MERGE_PATCH)],
    gateway: GatewayDep,
) -> Response:
    record = await apply_patch(gateway, name, patch)
    return _json((await _present(gateway, [record]))[0])


async def apply_patch(gateway: Gateway, name: str, patch: TargetPatch) -> TargetRecord:
    """``patch`` applied to the target ``name`` as ``PATCH`` does it, for the API and the
    dashboard alike: merged into the stored target (secret and headers kept), written
    only over the target it was merged into, and the dispatcher told (which logs
    ``target_enabled`` or ``target_disabled``)."""
    # The URL is checked when the patch names it or switches the target on, never
    # for switching it off: that must work even when the stored URL would be
    # refused now (its host moved to a private address).
    fields = patch.model_fields_set
    checked = False
    for _ in range(PATCH_TRIES):
        current = await gateway.store.get_target(name)
        if current is None:
            raise NotFound(f"no target named '{name}'")
        spec = _patched(patch, current, name)
        if not checked and ("url" in fields or ("enabled" in fields and spec.enabled)):
            await check_target_url(spec.url, allow_private=gateway.settings.allow_private_targets)
            checked = True
        reason = (
            disabled_reason(spec)
            if "enabled" in patch.model_fields_set
            else current.disabled_reason
        )
        if spec == current.spec and reason == current.disabled_reason:
            record: TargetRecord | None = current  # nothing to change: nothing written
        else:
            record = await gateway.store.replace_target(
                spec, disabled_reason=reason, seen=current.updated_at, now=gateway.clock.now()
            )
        if record is not None:
            break
    else:
        raise Conflict(
            f"target '{name}' kept changing while the patch was applied; try again",
            retry_after_s=1,
        )
    gateway.dispatcher.targets_changed()
    return record


def _patched(patch: TargetPatch, current: TargetRecord, name: str) -> TargetSpec:
    """The target ``patch`` makes of ``current``, or the ``422`` a ``PUT`` of it would get."""
    try:
        body = patch.apply(current.spec)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None
    return body.to_spec(name)


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
    # its series go at once; every dispatcher drops its own when it reads the targets
    gateway.metrics.forget_target(name)
    gateway.dispatcher.targets_changed()
    return Response(status_code=204)
