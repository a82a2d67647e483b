"""Configuration read from files and checked before anything starts: the API keys
and the targets file.

``build_keyring`` turns ``CSJD_API_KEYS`` and ``CSJD_API_KEYS_FILE`` into the
``Keyring``; ``load_targets_file`` checks every target of ``CSJD_TARGETS_FILE``
as ``PUT /targets/{name}`` would, then stores them all. Either raises
``ConfigError``, whose message says where and why without repeating a secret.
The ``CSJD_*`` settings themselves live in ``app/settings.py``; the gateway
(``app/gateway.py``) is handed a ``Settings`` and calls these, and nothing
here is kept in a global.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from app.api.schemas import NAME_PATTERN
from app.api.target_schemas import TargetIn
from app.core.access import Keyring, load_keys_file, parse_keys
from app.core.errors import CsjdError
from app.net import check_target_url
from app.settings import Settings
from app.storage.base import JobStore


class ConfigError(RuntimeError):
    """The configuration cannot work; the message says why."""


def build_keyring(settings: Settings) -> Keyring:
    """The API keys of ``CSJD_API_KEYS`` and ``CSJD_API_KEYS_FILE``; ``ConfigError`` if unusable."""
    try:
        keys = parse_keys(settings.api_keys or "")
        if settings.api_keys_file is not None:
            keys += load_keys_file(settings.api_keys_file)
        keyring = Keyring(keys)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not keyring.enabled and (settings.api_keys is not None or settings.api_keys_file):
        # set but empty (a truncated file, a template left blank): failing open
        # would quietly let everyone in
        raise ConfigError(
            "CSJD_API_KEYS or CSJD_API_KEYS_FILE is set but holds no key; "
            "unset both to run without auth"
        )
    return keyring


async def load_targets_file(path: Path, store: JobStore, settings: Settings, now: float) -> int:
    """Put every target of ``path`` into ``store``, or none if one is wrong; how many."""
    try:
        data = yaml.safe_load(await asyncio.to_thread(path.read_text))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"CSJD_TARGETS_FILE {path}: cannot read it: {exc}") from None
    if data is None:
        return 0
    if not isinstance(data, list):
        raise ConfigError(f"CSJD_TARGETS_FILE {path}: expected a list of targets")
    specs = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"CSJD_TARGETS_FILE {path}: entry {i} needs a 'name'")
        name = item["name"]
        try:
            body = TargetIn.model_validate(item)
            spec = body.to_spec(name)
            if re.match(NAME_PATTERN, name) is None:
                raise ConfigError(f"CSJD_TARGETS_FILE {path}: '{name}' is not a valid name")
            await check_target_url(spec.url, allow_private=settings.allow_private_targets)
        except ValidationError as exc:
            # where and why only: pydantic's own text repeats the input, secrets included
            why = "; ".join(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            )
            raise ConfigError(f"CSJD_TARGETS_FILE {path}: target '{name}': {why}") from None
        except CsjdError as exc:
            raise ConfigError(f"CSJD_TARGETS_FILE {path}: target '{name}': {exc.detail}") from None
        specs.append(spec)
    for spec in specs:
        await store.put_target(spec, now)
    return len(specs)
