"""The operator commands' arguments, declared with argparse alone.

``add_commands`` hangs ``targets``, ``schedules``, ``jobs`` and ``status`` on
the ``csjd`` parser; every leaf command names the function in ``app.console.actions`` that
runs it (``action``). The console's options (``--url``, ``--token``, ``--json``,
``--wide``) are accepted at every level: ``csjd --url X status``, ``csjd jobs
--url X list`` and ``csjd jobs list --url X`` mean the same; each level keeps
them under its own prefix (argparse would let a subcommand's defaults erase
the value given before it), and ``option`` picks the innermost one given.
``targets put`` takes ``--url`` for the target's URL, so there the gateway's
address is given before the verb (``csjd --url GATEWAY targets put NAME --url
HOOK``). ``jobs list``, ``jobs count`` and a bulk ``jobs retry`` share the job
filters (``job_filters`` maps them to ``GET /jobs``'s query); ``--since`` and
``--until`` take RFC 3339 or how long ago (``when``), resolved once, so a count
and the listing after it see the same instant. Nothing here imports httpx or
rich: building the parser must stay cheap for ``csjd serve``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

DEFAULT_URL = "http://127.0.0.1:8080"
JOB_STATES = ("scheduled", "queued", "running", "retrying", "succeeded", "failed", "cancelled")
#: the states a job can be retried from (a succeeded one is sent again)
RETRYABLE_STATES = ("failed", "cancelled", "succeeded")
FAILURE_REASONS = ("permanent_status", "attempts_exhausted", "expired", "target_gone")
#: the job filters' flags, and the ``GET /jobs`` query parameters they set
FILTERS = (
    ("state", "state"),
    ("target", "target"),
    ("caller", "caller"),
    ("reason", "reason"),
    ("since", "created_after"),
    ("until", "created_before"),
    ("ordering_key", "ordering_key"),
)
_AGO = re.compile(r"(\d+)([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
COMMANDS = ("targets", "schedules", "jobs", "status")
#: the prefixes the console's options are kept under, innermost level first
LEVELS = ("", "group_", "global_")
OPTIONS = ("url", "token", "json", "wide")


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


def _header_option(cmd: argparse.ArgumentParser, help: str) -> None:
    """``--header NAME=VALUE``, repeatable, collected in ``headers``."""
    cmd.add_argument(
        "--header", dest="headers", metavar="NAME=VALUE", type=_header, action="append", help=help
    )


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not JSON: {text!r} (a string needs its quotes: '\"text\"')"
        ) from None


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def when(text: str, now: datetime | None = None) -> str:
    """A time as RFC 3339 UTC: given so (``2026-01-01T00:00:00Z``, any offset), or as
    how long before ``now`` (``90s``, ``15m``, ``2h``, ``3d``, ``1w``)."""
    given = text.strip()
    try:
        if match := _AGO.fullmatch(given):
            ago = timedelta(seconds=int(match[1]) * _SECONDS[match[2]])
            at = (now or datetime.now(UTC)).replace(microsecond=0) - ago
        else:
            at = datetime.fromisoformat(given.upper())  # RFC 3339 allows 't' and 'z
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a time (RFC 3339, e.g. 2026-01-01T00:00:00Z) or how long ago "
            f"(15m, 2h, 3d), got {text!r}"
        ) from None
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is too long ago") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} needs its offset from UTC, e.g. 2026-01-01T00:00:00Z or +02:00"
        )
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _gateway_flags(parser: argparse.ArgumentParser, *, url: bool = True, prefix: str = "") -> None:
    group = parser.add_argument_group("gateway")
    if url:
        group.add_argument(
            "--url",
            dest=f"{prefix}url",
            metavar="URL",
            help=f"the gateway's address (default: $CSJD_URL or {DEFAULT_URL})",
        )
    group.add_argument(
        "--token",
        dest=f"{prefix}token",
        metavar="TOKEN",
        help="API token sent as a bearer token (default: $CSJD_TOKEN)",
    )


def _output_flags(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
    group = parser.add_argument_group("output")
    group.add_argument(
        "--json",
        dest=f"{prefix}json",
        action="store_true",
        default=None,
        help="print the API's JSON answer, for scripts",
    )
    group.add_argument(
        "--wide",
        dest=f"{prefix}wide",
        action="store_true",
        default=None,
        help="show every column, even when lines grow wider than the terminal",
    )


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """The console's options given before the command: ``csjd --url X status``."""
    _gateway_flags(parser, prefix="global_")
    _output_flags(parser, prefix="global_")


def global_options_given(args: argparse.Namespace) -> list[str]:
    return [f"--{name}" for name in OPTIONS if getattr(args, f"global_{name}", None)]


def option(args: argparse.Namespace, name: str) -> Any:
    """The value of a console option, from the innermost level that was given it."""
    for prefix in LEVELS:
        value = getattr(args, f"{prefix}{name}", None)
        if value is not None:
            return value
    return None


def _common(*, url: bool = True) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _gateway_flags(common, url=url)
    _output_flags(common)
    return common


def _job_filters(
    cmd: argparse.ArgumentParser,
    states: tuple[str, ...],
    *,
    group: argparse._MutuallyExclusiveGroup | None = None,
) -> None:
    (group or cmd).add_argument("--state", choices=states)
    cmd.add_argument("--target", metavar="NAME")
    cmd.add_argument("--caller", metavar="KEY", help="this API key's jobs (an admin key's choice)")
    cmd.add_argument(
        "--reason", choices=FAILURE_REASONS, help="failed jobs, failed for this reason"
    )
    cmd.add_argument(
        "--since",
        type=when,
        metavar="WHEN",
        help="created at or after: RFC 3339, or 15m, 2h, 3d ago",
    )
    cmd.add_argument("--until", type=when, metavar="WHEN", help="created before: the same forms")
    cmd.add_argument("--ordering-key", metavar="KEY", help="the jobs of this ordering key's line")


def job_filters(args: argparse.Namespace) -> dict[str, str]:
    """The ``GET /jobs`` filters the command line gives, by query parameter."""
    given = {param: getattr(args, flag, None) for flag, param in FILTERS}
    if getattr(args, "failed", False):
        given["state"] = "failed"
    return {param: value for param, value in given.items() if value is not None}


if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
Leaf = Callable[..., argparse.ArgumentParser]


def _schedule_commands(commands: Subparsers, leaf: Leaf) -> None:
    schedules = commands.add_parser(
        "schedules", help="list, show, create, replace and remove cron schedules"
    )
    _gateway_flags(schedules, prefix="group_")
    _output_flags(schedules, prefix="group_")
    s = schedules.add_subparsers(dest="schedules_command", required=True)
    leaf(s, "list", "schedules_list", "every schedule with its next and last fire")
    leaf(s, "show", "schedules_show", "one schedule: its job, next and last fire").add_argument(
        "name"
    )
    put = leaf(
        s,
        "put",
        "schedules_put",
        "create or replace a schedule (fields not given take their defaults)",
    )
    put.add_argument("name")
    put.add_argument(
        "--file",
        metavar="FILE",
        help="the schedule as JSON or YAML ('-' reads standard input); flags override it",
    )
    put.add_argument(
        "--cron",
        metavar="EXPR",
        help="when it fires: 5 fields (minute hour day month weekday), 6 with seconds "
        "first, or @hourly, @daily, @weekly, @monthly, @yearly",
    )
    put.add_argument(
        "--timezone", metavar="ZONE", help="IANA time zone of the fields (default UTC)"
    )
    put.add_argument("--target", metavar="NAME", help="the target each job goes to")
    put.add_argument(
        "--payload", type=_json_value, metavar="JSON", help="each job's payload (default null)"
    )
    _header_option(put, "a header of each job; repeat for more")
    put.add_argument("--disabled", action="store_true", help="create it switched off")
    leaf(s, "delete", "schedules_delete", "remove a schedule (its jobs stay)").add_argument("name")


def add_commands(commands: Subparsers) -> None:
    common, without_url = _common(), _common(url=False)

    def leaf(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        action: str,
        help_text: str,
        *,
        url: bool = True,
    ) -> argparse.ArgumentParser:
        cmd = parent.add_parser(
            name, parents=[common if url else without_url], help=help_text, description=help_text
        )
        cmd.set_defaults(action=action)
        return cmd

    targets = commands.add_parser(
        "targets", help="list, show, register, enable, disable and remove targets"
    )
    _gateway_flags(targets, prefix="group_")
    _output_flags(targets, prefix="group_")
    t = targets.add_subparsers(dest="targets_command", required=True)
    leaf(t, "list", "targets_list", "every target with its live state")
    leaf(t, "show", "targets_show", "one target and its live state").add_argument("name")
    put = leaf(
        t,
        "put",
        "targets_put",
        "create or replace a target (fields not given take their defaults)",
        url=False,
    )
    put.add_argument("name")
    put.add_argument(
        "--file",
        metavar="FILE",
        help="the target as JSON or YAML ('-' reads standard input); flags override its fields",
    )
    put.add_argument("--url", dest="target_url", metavar="URL", help="the webhook URL")
    put.add_argument("--timeout-s", type=float)
    put.add_argument("--max-concurrency", type=_positive)
    put.add_argument("--rate-limit-per-s", type=float)
    put.add_argument("--max-attempts", type=_positive)
    put.add_argument("--backoff-initial-s", type=float)
    put.add_argument("--backoff-max-s", type=float)
    put.add_argument("--max-retry-duration-s", type=float)
    put.add_argument("--secret", help="whsec_… signing secret (visible to other local users)")
    _header_option(put, "a static delivery header; repeat for more")
    put.add_argument("--disabled", action="store_true", help="register it disabled")
    leaf(t, "enable", "targets_enable", "send to a target again").add_argument("name")
    leaf(
        t, "disable", "targets_disable", "stop sending to a target; its jobs wait, queued"
    ).add_argument("name")
    leaf(t, "delete", "targets_delete", "remove a target with no unfinished jobs").add_argument(
        "name"
    )

    _schedule_commands(commands, leaf)

    jobs = commands.add_parser("jobs", help="list, inspect, cancel and retry jobs")
    _gateway_flags(jobs, prefix="group_")
    _output_flags(jobs, prefix="group_")
    j = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = leaf(j, "list", "jobs_list", "jobs, newest first")
    _job_filters(listing, JOB_STATES)
    listing.add_argument(
        "--limit",
        type=_positive,
        help="jobs to show (default 50); with --all, jobs per page (default 500)",
    )
    listing.add_argument("--cursor", help="start at this page (from the page before it)")
    listing.add_argument("--all", action="store_true", help="follow every page")
    _job_filters(leaf(j, "count", "jobs_count", "how many jobs match the filters"), JOB_STATES)
    leaf(
        j, "show", "jobs_show", "one job: payload, headers, every attempt and its timeline"
    ).add_argument("job_id")
    leaf(j, "attempts", "jobs_attempts", "every attempt made for a job").add_argument("job_id")
    leaf(j, "cancel", "jobs_cancel", "cancel a job that has not finished").add_argument("job_id")
    retry = leaf(
        j,
        "retry",
        "jobs_retry",
        "queue finished jobs again, attempts reset: the ids given, or every job matching "
        "--failed (or --state) and the filters",
    )
    retry.add_argument("job_ids", nargs="*", metavar="ID")
    which = retry.add_mutually_exclusive_group()
    which.add_argument("--failed", action="store_true", help="every failed job (--state failed)")
    _job_filters(retry, RETRYABLE_STATES, group=which)
    retry.add_argument(
        "--dry-run", action="store_true", help="show how many match and the first few; retry none"
    )
    retry.add_argument(
        "--yes", "-y", action="store_true", help="retry the jobs matching without asking"
    )

    commands.add_parser(
        "status",
        parents=[common],
        help="readiness, backlog by state, breakers, pauses and disabled targets",
    ).set_defaults(action="status")
