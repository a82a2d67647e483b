"""API keys: who a bearer token names, and which role that name holds.

A key is a name, a role (``producer`` may use ``/jobs``; ``admin`` may use
everything) and the SHA-256 digest of its token; csjd keeps no token itself
once it has read its configuration. Keys come from ``CSJD_API_KEYS``
(``name:token:role``, comma-separated) or ``CSJD_API_KEYS_FILE`` (a YAML or
JSON list of ``{name, role, token_sha256}``). One name may hold several
tokens, which is how a token is rotated: add the new one, move the callers,
remove the old one. ``Keyring.identify`` compares a presented token against
every key in constant time. Reading HTTP headers and answering 401/403 is the
API edge's business (``app/api/auth.py``); this module has no I/O but
``load_keys_file``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import yaml

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
#: The one scope of idempotency keys and jobs while auth is off.
ANONYMOUS = ""
#: tokens shorter than this are accepted with a warning (see ``Keyring.weak``)
RECOMMENDED_TOKEN_CHARS = 24
_TOKEN = re.compile(r"^[\x21-\x7e]+$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class KeyRole(StrEnum):
    """What an API key may use: ``/jobs`` (``producer``) or everything (``admin``)."""

    PRODUCER = "producer"
    ADMIN = "admin"

    def allows(self, needed: KeyRole) -> bool:
        return self is KeyRole.ADMIN or needed is KeyRole.PRODUCER


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    role: KeyRole
    digest: bytes
    #: the token was given in clear and is short (only known for ``CSJD_API_KEYS``)
    short: bool = False


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    """A fresh random token (256 bits), for ``csjd keys new``."""
    return "csjd_" + secrets.token_urlsafe(32)


def _name(name: str, where: str) -> str:
    if re.match(NAME_PATTERN, name) is None:
        raise ValueError(f"{where}: '{name}' is not a valid key name ({NAME_PATTERN})")
    return name


def _role(role: str, where: str) -> KeyRole:
    try:
        return KeyRole(role.strip().lower())
    except ValueError:
        raise ValueError(f"{where}: the role is 'producer' or 'admin', not '{role}'") from None


def parse_keys(spec: str) -> list[ApiKey]:
    """The keys of ``CSJD_API_KEYS``: ``name:token:role[,name:token:role…]``."""
    keys = []
    for i, item in enumerate(part.strip() for part in spec.split(",")):
        if not item:
            continue
        where = f"CSJD_API_KEYS entry {i + 1}"
        name, sep, rest = item.partition(":")
        token, sep2, role = rest.rpartition(":")
        if not sep or not sep2 or not token:
            raise ValueError(f"{where}: expected name:token:role")
        if _TOKEN.match(token) is None:
            raise ValueError(f"{where}: a token is visible ASCII without spaces or commas")
        keys.append(
            ApiKey(
                _name(name.strip(), where),
                _role(role, where),
                token_digest(token),
                short=len(token) < RECOMMENDED_TOKEN_CHARS,
            )
        )
    return keys


def parse_keys_document(data: object, where: str) -> list[ApiKey]:
    """The keys of a parsed ``CSJD_API_KEYS_FILE``: a list of ``{name, role, token_sha256}``."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a list of keys")
    keys = []
    for i, item in enumerate(data):
        at = f"{where}: entry {i + 1}"
        if not isinstance(item, dict) or set(item) != {"name", "role", "token_sha256"}:
            raise ValueError(f"{at}: expected exactly name, role and token_sha256")
        digest = str(item["token_sha256"]).strip().lower()
        if _DIGEST.match(digest) is None:
            raise ValueError(f"{at}: token_sha256 is 64 hexadecimal digits")
        keys.append(
            ApiKey(
                _name(str(item["name"]), at), _role(str(item["role"]), at), bytes.fromhex(digest)
            )
        )
    return keys


def load_keys_file(path: Path) -> list[ApiKey]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"CSJD_API_KEYS_FILE {path}: cannot read it: {exc}") from None
    return parse_keys_document(data, f"CSJD_API_KEYS_FILE {path}")


class Keyring:
    """Every configured key; empty means auth is off."""

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self._keys = tuple(keys)
        roles: dict[str, KeyRole] = {}
        digests: set[bytes] = set()
        for key in self._keys:
            if roles.setdefault(key.name, key.role) is not key.role:
                raise ValueError(f"API key name '{key.name}' is given two roles")
            if key.digest in digests:
                raise ValueError(f"two API keys share one token (one is '{key.name}')")
            digests.add(key.digest)
        self._roles = roles

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def role(self, name: str) -> KeyRole | None:
        """The role the keys named ``name`` hold (None: no such key)."""
        return self._roles.get(name)

    @property
    def names(self) -> dict[str, KeyRole]:
        return {key.name: key.role for key in self._keys}

    @property
    def weak(self) -> list[str]:
        """Names with a token shorter than ``RECOMMENDED_TOKEN_CHARS``."""
        return sorted({key.name for key in self._keys if key.short})

    def identify(self, token: str) -> ApiKey | None:
        """The key whose token this is, compared against every key in constant time."""
        digest = token_digest(token)
        found = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found
