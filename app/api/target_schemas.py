"""The bodies of ``/targets``: what a target is, as the API takes and shows it.

A target's fields are declared once for the API, in ``TargetIn`` (with their
limits, defaults and descriptions); ``TargetOut``, ``TargetPatch`` and the
conversion to the core's ``TargetSpec`` are derived from it and ``SPEC_FIELDS``.
The checks a target's headers share with a job's are ``schemas.py``'s."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

from app.api.schemas import MASK, check_headers
from app.core.errors import Unprocessable
from app.core.signing import decode_secrets
from app.core.target import SPEC_FIELDS, TargetSpec


class TargetIn(BaseModel):
    """A webhook target's configuration (``PUT /targets/{name}``)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="Optional; must equal the path's name")
    url: str = Field(max_length=2048, description="http or https URL the jobs are POSTed to")
    timeout_s: float = Field(default=10.0, ge=0.1, le=300)
    max_concurrency: int = Field(default=16, ge=1, le=10_000)
    rate_limit_per_s: float | None = Field(default=None, gt=0, le=1_000_000)
    max_attempts: int = Field(default=10, ge=1, le=1000)
    backoff_initial_s: float = Field(default=1.0, gt=0, le=86400)
    backoff_max_s: float = Field(default=600.0, gt=0, le=7 * 86400)
    max_retry_duration_s: float = Field(default=86400.0, gt=0, le=30 * 86400)
    secret: str | None = Field(
        default=None,
        max_length=512,
        description=(
            "whsec_… (base64, ≥ 24 bytes); several separated by spaces while rotating, "
            "each signing every delivery; write-only"
        ),
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Static headers added to each delivery; write-only"
    )
    enabled: bool = True

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None:
            decode_secrets(value)
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)

    @model_validator(mode="after")
    def _backoff(self) -> TargetIn:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        return self

    def to_spec(self, name: str) -> TargetSpec:
        """This body as the target ``name`` (the path's, or the targets file's)."""
        if self.name is not None and self.name != name:
            raise Unprocessable(
                f"the body names target '{self.name}' but the path names '{name}'",
                extensions={
                    "errors": [
                        {
                            "loc": ["body", "name"],
                            "msg": "must equal the path's name",
                            "type": "value_error",
                        }
                    ]
                },
            )
        fields = {field: getattr(self, field) for field in SPEC_FIELDS}
        fields["headers"] = dict(self.headers)  # the spec's own, not the body's
        return TargetSpec(name=name, **fields)


class TargetState(BaseModel):
    breaker: Literal["closed", "open", "half_open"]
    breaker_reopens_at: datetime | None = Field(
        description=(
            "Set while the breaker is open, and only then: when it half-opens and lets "
            "the next probe attempt through (the next probe, if a job is due then)"
        )
    )
    paused_until: datetime | None
    concurrency_limit: int
    inflight: int
    backlog: dict[str, int]
    disabled_reason: str | None


#: what the API shows of a write-only field instead of its value
_MASKED = {
    "secret": f"'{MASK}' when a secret is set",
    "headers": f"names only; values read '{MASK}'",
}


def _target_out_fields() -> dict[str, Any]:
    """``TargetOut``'s fields: every field of ``TargetSpec`` typed as ``TargetIn``
    types it (an answer has neither the input's limits nor its defaults), then
    what csjd keeps beside the spec."""
    fields: dict[str, Any] = {"name": (str, ...)}
    for name in SPEC_FIELDS:
        annotation = TargetIn.model_fields[name].annotation
        fields[name] = (annotation, Field(description=_MASKED.get(name)))
    fields |= {
        "created_at": (datetime, ...),
        "updated_at": (datetime, ...),
        "state": (TargetState, ...),
    }
    return fields


TargetOut = create_model("TargetOut", **_target_out_fields())


def _no_defaults(schema: dict[str, Any]) -> None:
    # a member left out of a patch is left alone; it does not default to null
    for member in schema.get("properties", {}).values():
        member.pop("default", None)


class _PatchBase(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_defaults)

    @field_validator("headers", check_fields=False)
    @classmethod
    def _patch_headers(cls, value: dict[str, str | None] | None) -> dict[str, str | None] | None:
        if value is not None:
            check_headers({name: v for name, v in value.items() if v is not None})
            if len({name.lower() for name in value}) < len(value):
                raise ValueError("a header is named twice (names are case-insensitive)")
        return value

    def apply(self, current: TargetSpec) -> TargetIn:
        """``current`` with this patch merged in (RFC 7396), validated as a ``PUT`` body
        is (``pydantic.ValidationError`` if it is not one). A member set to null is
        removed, so the field takes its default (``url`` has none: refused); a
        header set to null is removed, and header names match whatever their case."""
        body: dict[str, Any] = {field: getattr(current, field) for field in SPEC_FIELDS}
        body["headers"] = dict(current.headers)
        for field in self.model_fields_set:
            value = getattr(self, field)
            if value is None:
                body.pop(field, None)
            elif field == "headers":
                body["headers"] = _merge_headers(body["headers"], value)
            else:
                body[field] = value
        return TargetIn.model_validate(body)


def _merge_headers(headers: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
    merged = dict(headers)
    for name, value in patch.items():
        for same in [n for n in merged if n.lower() == name.lower()]:
            del merged[same]
        if value is not None:
            merged[name] = value
    return merged


def _target_patch_fields() -> dict[str, Any]:
    """``TargetPatch``'s fields: each of ``TargetIn``'s, with its limits and
    description, optional and nullable; a header's value may be null too."""
    fields: dict[str, Any] = {}
    for name, declared in TargetIn.model_fields.items():
        annotation: Any = dict[str, str | None] if name == "headers" else declared.annotation
        info = FieldInfo.merge_field_infos(declared, default=None)
        info.default_factory = None
        fields[name] = (annotation | None, info)
    return fields


if TYPE_CHECKING:  # its fields are read by name (``model_fields_set``), never as attributes
    TargetPatch = _PatchBase
else:
    TargetPatch = create_model(
        "TargetPatch",
        __base__=_PatchBase,
        __doc__="Changes to a target (``PATCH /targets/{name}``): a JSON merge patch (RFC 7396).",
        **_target_patch_fields(),
    )
