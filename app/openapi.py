"""Prints the app's OpenAPI document as YAML (``make openapi`` writes openapi.yaml)."""

from __future__ import annotations

import sys
from typing import Any

import yaml

from app.main import create_app
from app.settings import Settings


def document() -> dict[str, Any]:
    # the schema does not depend on configuration; defaults are enough
    return create_app(Settings(database_url="sqlite+aiosqlite:///:memory:")).openapi()


def render() -> str:
    return yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
