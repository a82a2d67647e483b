"""The ``csjd`` command: ``serve`` (API and dispatcher, in one process or, with
``--workers 2``, two: ``app/workers.py``), ``migrate``, ``keys``
(making a token and the line that configures it), and the operator's console
(``targets``, ``jobs``, ``status``), which speaks to a running gateway over HTTP
and is imported only when one of its commands runs."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import ValidationError

from app import __version__
from app.console import parser as console
from app.settings import ProcessRole, Settings

if TYPE_CHECKING:
    from app.core.access import Keyring
    from app.seat import Seat

log = logging.getLogger("csjd")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        print(f"csjd: invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(args: argparse.Namespace) -> int:
    if (seat := _seat(args)) is not None:
        from app.seat import die_with_parent

        die_with_parent(seat.parent_pid)  # first: a worker never outlives its parent
    from app import logs
    from app.startup import StartFailed
    from app.workers import refusal, run_workers

    settings = _settings()
    if (why := refusal(args, settings)) is not None:
        print(f"csjd: {why}", file=sys.stderr)
        return 2
    role = ProcessRole(args.role or ProcessRole.ALL)
    logs.configure(settings.log_format, fields=None if seat is None else {"worker": role.value})
    try:
        if (args.workers or 1) > 1:
            # the parent stays small: its workers check the database and the keys
            return run_workers(settings, args.host, args.port, args.dispatcher_port or 0)
        return _serve_one(settings, args.host, args.port, role, seat)
    except StartFailed as exc:
        print(f"csjd: {exc}", file=sys.stderr)
        return exc.status


def _serve_one(
    settings: Settings, host: str, port: int, role: ProcessRole, seat: Seat | None
) -> int:
    """One gateway process: alone, one half of a split, or a worker (``seat``)."""
    from app.serve import run
    from app.startup import database_failure
    from app.storage.backend import Backend, DatabaseInUse

    try:
        Backend(settings, role).locks().probe()
    except DatabaseInUse as exc:
        log.error("database_in_use", extra={"detail": str(exc)})
        print(f"csjd: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the SQLite file's directory cannot hold its lock
        if (failure := database_failure(exc, settings)) is None:
            raise
        print(f"csjd: {failure}", file=sys.stderr)
        return failure.status
    from app.config import ConfigError, build_keyring

    try:
        keyring = build_keyring(settings)
    except ConfigError as exc:
        print(f"csjd: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if seat is None or role is ProcessRole.API:  # said where people reach csjd, once
        _notices(settings, keyring)
    return run(settings, host, port, role, seat)


def _seat(args: argparse.Namespace) -> Seat | None:
    """A worker's seat under a ``csjd serve --workers`` parent (``app/seat.py``);
    None unless all three of its options are given (``refusal`` says the rest)."""
    if args.worker_of is None or args.listen_fd is None or args.ready_fd is None:
        return None
    from app.seat import Seat

    return Seat(parent_pid=args.worker_of, listen_fd=args.listen_fd, ready_fd=args.ready_fd)


def _notices(settings: Settings, keyring: Keyring) -> None:
    """What a person should know at start: whether auth is on, traces exported."""
    if keyring.enabled:
        log.info("auth_enabled", extra={"keys": keyring.names})
        if keyring.weak:
            log.warning(
                "short_api_tokens",
                extra={
                    "names": keyring.weak,
                    "detail": "tokens this short can be guessed; make them with 'csjd keys new'",
                },
            )
    else:
        log.warning(
            "auth_disabled",
            extra={
                "detail": "CSJD_API_KEYS and CSJD_API_KEYS_FILE are not set: every caller "
                "is trusted and may manage targets; set API keys outside a trusted network"
            },
        )
    if settings.traces_exported:
        log.info(
            "traces_exported",
            extra={"detail": "a span per intake and per attempt, over OTLP/HTTP (OTEL_*)"},
        )


def migrate() -> int:
    from app import logs
    from app.startup import database_failure, open_sqlite_file
    from app.storage.backend import Backend, DatabaseInUse

    settings = _settings()
    logs.configure(settings.log_format)
    backend = Backend(settings, ProcessRole.ALL)
    locks = backend.locks()
    try:
        locks.acquire()
        open_sqlite_file(settings)
        backend.migrate_blocking()  # logs "migrated"
    except DatabaseInUse as exc:
        print(f"csjd: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if (failure := database_failure(exc, settings)) is None:
            raise
        print(f"csjd: {failure}", file=sys.stderr)
        return failure.status
    finally:
        locks.release()
    return 0


def new_key(name: str, role: str) -> int:
    """Print a fresh token and the two ways to configure it."""
    from app.core.access import Keyring, KeyRole, new_token, parse_keys, token_digest

    token = new_token()
    try:
        Keyring(parse_keys(f"{name}:{token}:{KeyRole(role)}"))
    except ValueError as exc:
        print(f"csjd: {exc}", file=sys.stderr)
        return 2
    print(f"token (give it to the caller; csjd keeps only its hash): {token}")
    print(f"CSJD_API_KEYS entry: {name}:{token}:{role}")
    print("CSJD_API_KEYS_FILE entry:")
    print(f"- name: {name}\n  role: {role}\n  token_sha256: {token_digest(token).hex()}")
    return 0


def hash_token() -> int:
    """Print the SHA-256 of a token read from standard input, for CSJD_API_KEYS_FILE."""
    from app.core.access import token_digest

    token = sys.stdin.readline().strip()
    if not token:
        print("csjd: give the token on standard input", file=sys.stderr)
        return 2
    print(token_digest(token).hex())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csjd", description="csjd, the HTTP job gateway")
    parser.add_argument("--version", action="version", version=f"csjd {__version__}")
    console.add_global_options(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the gateway (API and dispatcher)")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8080)
    serve_cmd.add_argument(
        "--role",
        choices=[r.value for r in ProcessRole],
        help="all (default); or split one database over an api and a dispatcher process",
    )
    serve_cmd.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="1 (default): one process; 2: an api and a dispatcher process on one "
        "database, started and stopped together",
    )
    serve_cmd.add_argument(
        "--dispatcher-port",
        type=int,
        metavar="PORT",
        help="with --workers 2: the dispatcher process's port (default: a free one, logged)",
    )
    # a worker's seat under a --workers parent (app/seat.py); not for people
    for internal in ("--worker-of", "--listen-fd", "--ready-fd"):
        serve_cmd.add_argument(internal, type=int, help=argparse.SUPPRESS)
    commands.add_parser("migrate", help="apply the database migrations and exit")
    keys_cmd = commands.add_parser("keys", help="make API keys").add_subparsers(
        dest="keys_command", required=True
    )
    new_cmd = keys_cmd.add_parser("new", help="print a new token and how to configure it")
    new_cmd.add_argument("name")
    new_cmd.add_argument("--role", choices=["producer", "admin"], default="producer")
    keys_cmd.add_parser("hash", help="print the SHA-256 of a token given on standard input")
    console.add_commands(commands)
    return parser


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = console.global_options_given(args)
    if given and args.command not in console.COMMANDS:
        parser.error(f"{', '.join(given)}: only for {', '.join(console.COMMANDS)}")
    if args.command in console.COMMANDS:
        from app.console.actions import run

        return run(args, os.environ if environ is None else environ)
    if args.command == "serve":
        return serve(args)
    if args.command == "keys":
        return new_key(args.name, args.role) if args.keys_command == "new" else hash_token()
    return migrate()
