"""The API's answers drawn as rich tables for an operator's terminal.

Each function takes JSON exactly as the gateway answered it and returns a
renderable; none does I/O. Every value from the server goes in as ``Text``,
never as markup, so an error message holding ``[brackets]`` prints as sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from app.console.client import JsonObject

BACKLOG_STATES = ("scheduled", "queued", "running", "retrying")
BREAKER_STYLES = {"closed": "green", "half_open": "yellow", "open": "bold red"}
STATE_STYLES = {
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "dim",
    "retrying": "yellow",
    "running": "cyan",
}


def cell(value: Any, style: str = "") -> Text:
    if value is None or value == "":
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no", style=style)
    if isinstance(value, dict):
        return Text(", ".join(f"{k}={v}" for k, v in value.items()) or "-", style=style)
    return Text(str(value), style=style)


def _state(target: JsonObject) -> JsonObject:
    state = target.get("state")
    return state if isinstance(state, dict) else {}


def _backlog(target: JsonObject) -> dict[str, int]:
    backlog = _state(target).get("backlog")
    backlog = backlog if isinstance(backlog, dict) else {}
    return {s: int(backlog.get(s) or 0) for s in BACKLOG_STATES}


def _breaker(state: JsonObject) -> Text:
    breaker = str(state.get("breaker") or "closed")
    text = Text(breaker, style=BREAKER_STYLES.get(breaker, ""))
    if state.get("breaker_reopens_at"):
        text.append(f" until {state['breaker_reopens_at']}", style="dim")
    return text


def _enabled(target: JsonObject) -> Text:
    if target.get("enabled", True):
        return Text("yes", style="green")
    reason = _state(target).get("disabled_reason")
    return Text(f"no ({reason})" if reason else "no", style="bold red")


def targets_table(targets: Iterable[JsonObject]) -> Table:
    table = Table(title="targets", title_justify="left")
    for name in ("name", "url", "enabled", "breaker", "paused_until", "limit", "inflight"):
        table.add_column(name, overflow="fold")
    for name in BACKLOG_STATES:
        table.add_column(name, justify="right")
    for target in targets:
        live = _state(target)
        backlog = _backlog(target)
        table.add_row(
            cell(target.get("name"), "bold"),
            cell(target.get("url")),
            _enabled(target),
            _breaker(live),
            cell(live.get("paused_until"), "yellow"),
            cell(f"{live.get('concurrency_limit')}/{target.get('max_concurrency')}"),
            cell(live.get("inflight")),
            *(cell(backlog[s]) for s in BACKLOG_STATES),
        )
    return table


def _fields(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, value if isinstance(value, Text) else cell(value))
    return table


def target_detail(target: JsonObject) -> Table:
    state = _state(target)
    settings = [(k, v) for k, v in target.items() if k not in {"state", "enabled"}]
    live: list[tuple[str, Any]] = [
        ("enabled", _enabled(target)),
        ("breaker", _breaker(state)),
        ("paused_until", state.get("paused_until")),
        ("concurrency_limit", state.get("concurrency_limit")),
        ("inflight", state.get("inflight")),
        ("backlog", _backlog(target)),
    ]
    return _fields(f"target {target.get('name')}", [*settings, *live])


def jobs_table(jobs: Iterable[JsonObject], title: str = "jobs") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("id", no_wrap=True)
    for name in ("target", "state", "attempts", "reason"):
        table.add_column(name, overflow="fold")
    table.add_column("last", max_width=60, no_wrap=True, overflow="ellipsis")
    table.add_column("created_at", no_wrap=True)
    for job in jobs:
        state = str(job.get("state"))
        table.add_row(
            cell(job.get("id")),
            cell(job.get("target")),
            cell(state, STATE_STYLES.get(state, "")),
            cell(f"{job.get('attempts')}/{job.get('max_attempts')}"),
            cell(job.get("failure_reason")),
            cell(job.get("last_status_code") or job.get("last_error")),
            cell(job.get("created_at")),
        )
    return table


def job_detail(job: JsonObject) -> Table:
    state = str(job.get("state"))
    rows = [
        (k, cell(v, STATE_STYLES.get(state, "")) if k == "state" else v) for k, v in job.items()
    ]
    return _fields(f"job {job.get('id')}", rows)


def attempts_table(job_id: str, attempts: Iterable[JsonObject]) -> Table:
    table = Table(title=f"attempts of job {job_id}", title_justify="left")
    for name in ("n", "started_at", "duration_ms", "status", "outcome", "error", "response"):
        table.add_column(name, overflow="fold")
    for attempt in attempts:
        outcome = str(attempt.get("outcome"))
        excerpt = attempt.get("response_excerpt")
        table.add_row(
            cell(attempt.get("n")),
            cell(attempt.get("started_at")),
            cell(attempt.get("duration_ms")),
            cell(attempt.get("status_code")),
            cell(outcome, "green" if outcome == "success" else "yellow"),
            cell(attempt.get("error")),
            cell(excerpt[:120] if isinstance(excerpt, str) else excerpt),
        )
    return table


def backlog_total(targets: Iterable[JsonObject]) -> dict[str, int]:
    total = dict.fromkeys(BACKLOG_STATES, 0)
    for target in targets:
        for state, count in _backlog(target).items():
            total[state] += count
    return total


def status_view(
    base_url: str, ready: bool, readyz: JsonObject, targets: list[JsonObject]
) -> RenderableType:
    parts: list[RenderableType] = []
    headline = Text(f"gateway {base_url}: ")
    if ready:
        headline.append("ready", style="bold green")
    else:
        headline.append("NOT READY", style="bold red")
        if readyz.get("detail"):
            headline.append(f" ({readyz['detail']})")
    parts.append(headline)

    backlog = backlog_total(targets)
    table = Table(title="backlog by state", title_justify="left")
    for name in (*BACKLOG_STATES, "total"):
        table.add_column(name, justify="right")
    table.add_row(*(cell(n) for n in (*backlog.values(), sum(backlog.values()))))
    parts.append(table)

    if not targets:
        parts.append(Text("no targets registered", style="dim"))
        return Group(*parts)
    attention = Table(title="targets", title_justify="left")
    for name in ("name", "enabled", "breaker", "paused_until", "inflight", "backlog"):
        attention.add_column(name, overflow="fold")
    for target in targets:
        state = _state(target)
        attention.add_row(
            cell(target.get("name"), "bold"),
            _enabled(target),
            _breaker(state),
            cell(state.get("paused_until"), "yellow"),
            cell(f"{state.get('inflight')}/{state.get('concurrency_limit')}"),
            cell(sum(_backlog(target).values())),
        )
    parts.append(attention)
    parts.append(Text(_summary(targets)))
    return Group(*parts)


def _summary(targets: list[JsonObject]) -> str:
    breakers = [_state(t).get("breaker") for t in targets]
    counts = {
        "breaker open": breakers.count("open"),
        "half-open": breakers.count("half_open"),
        "paused": sum(1 for t in targets if _state(t).get("paused_until")),
        "disabled": sum(1 for t in targets if not t.get("enabled", True)),
    }
    notes = [f"{n} {what}" for what, n in counts.items() if n]
    plural = "" if len(targets) == 1 else "s"
    return f"{len(targets)} target{plural}" + (
        ": " + ", ".join(notes) if notes else ", all healthy"
    )
