"""The ``csjd`` command: ``serve`` (API and dispatcher) and ``migrate``."""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from app import __version__
from app.settings import Role, Settings

log = logging.getLogger("csjd")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        print(f"csjd: invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(host: str, port: int, role: str) -> int:
    from app import logs
    from app.serve import run
    from app.storage.sqlite import DatabaseInUse, DatabaseLock

    settings = _settings()
    logs.configure(settings.log_format)
    the_role = Role(role)
    for duty in the_role.duties:
        probe = DatabaseLock(settings.database_url, duty)
        try:
            probe.acquire()
        except DatabaseInUse as exc:
            log.error("database_in_use", extra={"detail": str(exc)})
            print(f"csjd: {exc}", file=sys.stderr)
            return 1
        probe.release()
    # (settings refuse API keys this version would not enforce)
    log.warning(
        "auth_disabled", extra={"detail": "CSJD_API_KEYS is not set: every caller is trusted"}
    )
    return run(settings, host, port, the_role)


def migrate() -> int:
    from app import logs
    from app.storage.migrate import upgrade
    from app.storage.sqlite import DatabaseInUse, DatabaseLock

    settings = _settings()
    logs.configure(settings.log_format)
    locks = [DatabaseLock(settings.database_url, duty) for duty in Role.ALL.duties]
    try:
        for lock in locks:
            lock.acquire()
        upgrade(settings.database_url)
    except DatabaseInUse as exc:
        print(f"csjd: {exc}", file=sys.stderr)
        return 1
    finally:
        for lock in locks:
            lock.release()
    log.info("migrated", extra={"database": settings.database_url.split("://", 1)[0]})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="csjd", description="csjd, the HTTP job gateway")
    parser.add_argument("--version", action="version", version=f"csjd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the gateway (API and dispatcher)")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8080)
    serve_cmd.add_argument(
        "--role",
        choices=[r.value for r in Role],
        default=Role.ALL.value,
        help="all (default); or split one database over an api and a dispatcher process",
    )
    commands.add_parser("migrate", help="apply the database migrations and exit")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.host, args.port, args.role)
    return migrate()
