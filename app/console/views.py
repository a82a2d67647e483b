"""The API's answers as views an operator reads, on a terminal or through a pipe.

Each view function takes JSON exactly as the gateway answered it and returns a
``View``: lines of ``Text``, ``Sheet``s (rows under named columns) and
``Fields`` (one record, a name and a value a line); none does I/O. Every
value from the server goes in as ``Text``, never as markup, so an error
message holding ``[brackets]`` prints as sent. The parts, and how they are
drawn for a terminal or a pipe, are ``sheets.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.json import JSON
from rich.text import Text

from app.console.client import JsonObject
from app.console.sheets import Cell, Column, Fields, Part, Sheet, View, cell
from app.core.timeline import HELD, timeline

BACKLOG_STATES = ("scheduled", "queued", "running", "retrying")
#: the states ``csjd status`` counts of a producer's own jobs
OWN_JOB_STATES = (*BACKLOG_STATES, "failed")
BREAKER_STYLES = {"closed": "green", "half_open": "yellow", "open": "bold red"}
STATE_STYLES = {
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "dim",
    "retrying": "yellow",
    "running": "cyan",
}
#: how a timeline event's tone is drawn
TONE_STYLES = {"ok": "green", "bad": "bold red", "wait": "yellow"}
# -- targets ---------------------------------------------------------------------------


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


def _health(target: JsonObject) -> Text:
    """Everything that holds a target's deliveries back, or 'ok'."""
    state = _state(target)
    notes: list[Text] = []
    if not target.get("enabled", True):
        reason = state.get("disabled_reason")
        notes.append(Text(f"disabled ({reason})" if reason else "disabled", style="bold red"))
    breaker = str(state.get("breaker") or "closed")
    if breaker != "closed":
        text = Text(f"breaker {breaker.replace('_', '-')}", style=BREAKER_STYLES.get(breaker, ""))
        if state.get("breaker_reopens_at"):
            text.append(f" until {state['breaker_reopens_at']}")
        notes.append(text)
    if state.get("paused_until"):
        notes.append(Text(f"paused until {state['paused_until']}", style="yellow"))
    return Text(", ").join(notes) if notes else Text("ok", style="green")


def _name(target: JsonObject) -> Cell:
    return cell(target.get("name"), "bold")


def _backlog_total(target: JsonObject) -> Cell:
    return cell(sum(_backlog(target).values()))


def _inflight(target: JsonObject) -> Cell:
    state = _state(target)
    return cell(f"{state.get('inflight')}/{state.get('concurrency_limit')}")


NAME = Column("name", _name, key=True)
HEALTH = Column("state", _health, floor=10)
INFLIGHT = Column("inflight", _inflight, justify="right")
BACKLOG = Column("backlog", _backlog_total, justify="right")


def _backlog_column(state: str) -> Column:
    return Column(state, lambda t: cell(_backlog(t)[state]), justify="right")


def targets_view(targets: Sequence[JsonObject]) -> View:
    url = Column("url", lambda t: cell(t.get("url")), floor=16)
    wide = (
        NAME,
        url,
        Column("enabled", _enabled, floor=10),
        Column("breaker", lambda t: _breaker(_state(t)), floor=10),
        Column("paused_until", lambda t: cell(_state(t).get("paused_until"), "yellow")),
        Column(
            "limit",
            lambda t: cell(f"{_state(t).get('concurrency_limit')}/{t.get('max_concurrency')}"),
        ),
        Column("inflight", lambda t: cell(_state(t).get("inflight")), justify="right"),
        *(_backlog_column(s) for s in BACKLOG_STATES),
    )
    # the URL is settings, not state: --wide, 'targets show' and a pipe give it
    return (Sheet("targets", (NAME, HEALTH, INFLIGHT, BACKLOG), wide, targets),)


def target_fields(target: JsonObject) -> Fields:
    state = _state(target)
    settings = [(k, cell(v)) for k, v in target.items() if k not in {"state", "enabled"}]
    live: list[tuple[str, Cell]] = [
        ("enabled", _enabled(target)),
        ("breaker", _breaker(state)),
        ("paused_until", cell(state.get("paused_until"))),
        ("concurrency_limit", cell(state.get("concurrency_limit"))),
        ("inflight", cell(state.get("inflight"))),
        ("backlog", cell(_backlog(target))),
    ]
    return Fields(f"target {target.get('name')}", [*settings, *live])


def target_view(target: JsonObject) -> View:
    return (target_fields(target),)


# -- jobs ------------------------------------------------------------------------------


def _job_state(job: JsonObject) -> Cell:
    state = str(job.get("state"))
    return cell(state, STATE_STYLES.get(state, ""))


def _last(job: JsonObject) -> Cell:
    return cell(job.get("last_status_code") or job.get("last_error"))


def _last_and_reason(job: JsonObject) -> Cell:
    last, reason = _last(job), job.get("failure_reason")
    if not reason:
        return last
    return Text(f"{last.plain} ({reason})" if last else str(reason))


def jobs_view(jobs: Sequence[JsonObject], title: str = "jobs", caption: str = "") -> View:
    job_id = Column("id", lambda j: cell(j.get("id")), key=True)
    # a name up to 32 characters is never folded; the columns after it give way first
    target = Column("target", lambda j: cell(j.get("target")), floor=32)
    state = Column("state", _job_state, floor=9)
    attempts = Column("attempts", lambda j: cell(f"{j.get('attempts')}/{j.get('max_attempts')}"))
    default = (
        job_id,
        target,
        state,
        attempts,
        Column("last", _last_and_reason, floor=6, ellipsis=True),
    )
    wide = (
        job_id,
        target,
        state,
        attempts,
        Column("reason", lambda j: cell(j.get("failure_reason")), floor=10),
        Column("last", _last, floor=10, limit=60, ellipsis=True),
        Column("created_at", lambda j: cell(j.get("created_at")), floor=24),
    )
    return (Sheet(title, default, wide, jobs, caption),)


def job_fields(job: JsonObject) -> Fields:
    """A job's own fields, a line each (its payload and headers are blocks of their own)."""
    state = str(job.get("state"))
    rows: list[tuple[str, Cell]] = []
    for name, value in job.items():
        if name in ("payload", "headers"):
            continue
        if name == "state":
            rows.append((name, cell(value, STATE_STYLES.get(state, ""))))
        elif name == "held_by" and value:
            why = HELD.get(str(value))
            rows.append((name, cell(f"{value}: {why}" if why else value, "yellow")))
        else:
            rows.append((name, cell(value)))
    return Fields(f"job {job.get('id')}", rows)


def job_view(job: JsonObject) -> View:
    return (job_fields(job),)


def _payload(payload: Any) -> Text:
    text = Text("payload\n", style="table.title")
    # pretty, and folded to the terminal's width where a line is longer
    text.append_text(JSON.from_data(payload, indent=2, ensure_ascii=False).text)
    return text


def _headers(headers: dict[str, Any]) -> Part:
    if not headers:
        return Text("no headers of its own", style="dim")
    columns = (
        Column("header", lambda h: cell(h["name"]), floor=20),
        Column("value", lambda h: cell(h["value"]), floor=10),
    )
    rows = [{"name": name, "value": value} for name, value in headers.items()]
    return Sheet("headers", columns, columns, rows)


def _outcome(attempt: JsonObject) -> Cell:
    outcome = str(attempt.get("outcome"))
    return cell(outcome, "green" if outcome == "success" else "yellow")


def _duration(attempt: JsonObject) -> Cell:
    ms = attempt.get("duration_ms")
    if not isinstance(ms, int | float):
        return None
    if ms >= 1000:
        return Text(f"{ms / 1000:.1f} s")
    return Text(f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms")


#: on a terminal, a response excerpt is cut after this many characters (--wide: 60)
EXCERPT_SHOWN = 240


def _answer(attempt: JsonObject) -> Cell:
    """What the target answered: its content type and length, then the excerpt's
    start, with runs of white space as one space."""
    size = attempt.get("response_bytes")
    about = [str(attempt.get("content_type") or "")]
    if size is not None:
        about.append(f"{size} byte{'' if size == 1 else 's'}")
    text = Text(", ".join(a for a in about if a), style="dim")
    excerpt = " ".join(str(attempt.get("response_excerpt") or "").split())
    if excerpt:
        if len(excerpt) > EXCERPT_SHOWN:
            excerpt = excerpt[: EXCERPT_SHOWN - 1] + "…"
        text.append(("\n" if text else "") + excerpt)
    return text or None


def _attempt_columns(title: str, attempts: Sequence[JsonObject], *, times: bool) -> Sheet:
    """Attempts under ``title``: on a terminal with when each started (``times``) or with
    what the target answered; with ``--wide`` and through a pipe, every field."""
    n = Column("n", lambda a: cell(a.get("n")), key=True, justify="right")
    started = Column("started_at", lambda a: cell(a.get("started_at")), floor=24)
    status = Column("status", lambda a: cell(a.get("status_code")), justify="right")
    outcome = Column("outcome", _outcome, floor=9)
    error = Column("error", lambda a: cell(a.get("error")), floor=10)
    wide = (
        n,
        started,
        Column("duration_ms", lambda a: cell(a.get("duration_ms")), justify="right"),
        status,
        outcome,
        error,
        Column("content_type", lambda a: cell(a.get("content_type")), floor=12),
        Column("response_bytes", lambda a: cell(a.get("response_bytes")), justify="right"),
        Column(
            "response", lambda a: cell(a.get("response_excerpt")), floor=10, limit=60, ellipsis=True
        ),
    )
    if times:
        return Sheet(title, (n, started, status, outcome, error), wide, attempts)
    duration = Column("took", _duration, justify="right")
    answer = Column("answer", _answer, floor=16)
    return Sheet(title, (n, status, duration, outcome, error, answer), wide, attempts)


def attempts_view(job_id: str, attempts: Sequence[JsonObject]) -> View:
    return (_attempt_columns(f"attempts of job {job_id}", attempts, times=True),)


def timeline_sheet(job: JsonObject, attempts: Sequence[JsonObject]) -> Sheet:
    """The job's story (``app.core.timeline``, as the dashboard tells it)."""
    events = [
        {"at": e.at, "what": e.what, "detail": e.detail, "tone": e.tone}
        for e in timeline(job, attempts)
    ]
    columns = (
        Column("at", lambda e: cell(e["at"]), floor=24),
        Column("event", lambda e: cell(e["what"], TONE_STYLES.get(e["tone"], "")), floor=12),
        Column("detail", lambda e: cell(e["detail"]), floor=16),
    )
    return Sheet("timeline", columns, columns, events)


def job_page(job: JsonObject, attempts: Sequence[JsonObject]) -> View:
    """``csjd jobs show``: the job, what it delivers, every attempt and its timeline."""
    parts: list[Part] = [job_fields(job)]
    if "payload" in job:
        parts.append(_payload(job["payload"]))
    headers = job.get("headers")
    if isinstance(headers, dict):
        parts.append(_headers(headers))
    if attempts:
        parts.append(_attempt_columns("attempts", attempts, times=False))
    else:
        parts.append(Text("no attempts yet", style="dim"))
    parts.append(timeline_sheet(job, attempts))
    return tuple(parts)


# -- status ----------------------------------------------------------------------------


def backlog_total(targets: Iterable[JsonObject]) -> dict[str, int]:
    total = dict.fromkeys(BACKLOG_STATES, 0)
    for target in targets:
        for state, count in _backlog(target).items():
            total[state] += count
    return total


def _headline(base_url: str, ready: bool, readyz: JsonObject) -> Text:
    headline = Text(f"gateway {base_url}: ")
    if ready:
        headline.append("ready", style="bold green")
    else:
        headline.append("NOT READY", style="bold red")
        if readyz.get("detail"):
            headline.append(f" ({readyz['detail']})")
    return headline


def _count_column(name: str) -> Column:
    return Column(name, lambda counts: cell(counts[name]), justify="right")


def _counts(title: str, counts: dict[str, str]) -> Sheet:
    columns = [_count_column(name) for name in counts]
    return Sheet(title, columns, columns, [counts])


def status_view(base_url: str, ready: bool, readyz: JsonObject, targets: list[JsonObject]) -> View:
    backlog = backlog_total(targets)
    totals = {k: str(v) for k, v in (*backlog.items(), ("total", sum(backlog.values())))}
    parts: list[Part] = [_headline(base_url, ready, readyz), _counts("backlog by state", totals)]
    if not targets:
        return (*parts, Text("no targets registered", style="dim"))
    wide = (
        NAME,
        Column("enabled", _enabled, floor=10),
        Column("breaker", lambda t: _breaker(_state(t)), floor=10),
        Column("paused_until", lambda t: cell(_state(t).get("paused_until"), "yellow")),
        INFLIGHT,
        BACKLOG,
    )
    parts.append(Sheet("targets", (NAME, HEALTH, INFLIGHT, BACKLOG), wide, targets))
    parts.append(Text(_summary(targets)))
    return tuple(parts)


def own_jobs_view(base_url: str, ready: bool, readyz: JsonObject, counts: dict[str, int]) -> View:
    """``csjd status`` for a key that may not read targets: its own jobs only."""
    shown = {s: str(n) for s, n in counts.items()}
    return (
        _headline(base_url, ready, readyz),
        _counts("your jobs by state", shown),
        Text(
            "targets and breakers need an admin key; these counts are this key's own jobs",
            style="dim",
        ),
    )


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
