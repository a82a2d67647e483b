"""What the dashboard's overview shows, built once for its page and for ``/ui/live.json``.

Every target's live state and backlog, and what each of the last
``WINDOW_MINUTES`` minutes saw: jobs accepted, succeeded and failed, as
counts and as a chart. Each comes from the per-target counts the store keeps
(``app/storage/counts.py``) and from the dispatcher's memory, so a refresh
costs the same with a thousand jobs stored as with a million: a row per
target and state, and per target and minute, never a job. The chart is
drawn here, as numbers an SVG takes (``Chart``), and as that SVG
(``Chart.svg``, every text in it escaped): the page shows it, and
``app/static/live.js`` puts the same numbers from ``/ui/live.json`` into it,
by the class names given here, so the drawing lives in one place.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

from app.api.present import rfc3339, target_json
from app.gateway import Gateway
from app.storage.base import Activity
from app.storage.counts import KINDS, MINUTE_S, minute_of

WINDOW_MINUTES = 15


@dataclass(frozen=True, slots=True)
class Frame:
    """The chart's frame, in SVG units: a slot per minute, a bar in each."""

    slot_w: float = 20.0
    bar_w: float = 14.0
    #: the time axis' words go below the baseline
    height: float = 76.0
    #: where the bars stand
    baseline: float = 62.0
    #: how high the scale's top (``Chart.top`` a minute) reaches
    top_y: float = 12.0

    @property
    def width(self) -> float:
        return WINDOW_MINUTES * self.slot_w

    def bar_x(self, i: int) -> float:
        return i * self.slot_w + (self.slot_w - self.bar_w) / 2


FRAME = Frame()


@dataclass(frozen=True, slots=True)
class Series:
    """One kind of count for one target, a number per minute, oldest first."""

    counts: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def per_minute(self) -> float:
        return self.total / len(self.counts) if self.counts else 0.0


@dataclass(frozen=True, slots=True)
class Chart:
    """A target's minutes drawn: succeeded bars with failed ones stacked on them,
    and a line of the jobs accepted, scaled to ``top`` jobs a minute."""

    top: int
    #: the accepted line's points, as an SVG ``points`` attribute
    accepted: str
    #: per minute: the succeeded bar's y and height, then the failed bar's
    bars: list[tuple[float, float, float, float]]
    #: per minute, what it saw in words (shown on hover)
    tips: list[str]
    #: the whole chart in words (for screen readers)
    label: str

    def svg(self) -> Markup:
        """The chart as inline SVG: built here rather than in a template, where its
        few hundred elements per target cost several times as much to render."""
        f = FRAME
        w, h, top = f"{f.width:g}", f"{f.height:g}", f"{f.top_y:g}"
        parts = [
            f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="{escape(self.label)}" data-chart>',
            f'<line class="grid" x1="0" y1="{top}" x2="{w}" y2="{top}"></line>',
            f'<line class="grid" x1="0" y1="{f.baseline:g}" x2="{w}" y2="{f.baseline:g}"></line>',
            f'<text class="top" x="{f.width - 2:g}" y="{f.top_y - 3:g}" text-anchor="end">'
            f"{self.top}/min</text>",
            f'<text x="0" y="{f.height - 2:g}">{len(self.tips)} min ago</text>',
            f'<text x="{w}" y="{f.height - 2:g}" text-anchor="end">now</text>',
        ]
        for i, (sy, sh, fy, fh) in enumerate(self.bars):
            x, bar = f"{f.bar_x(i):g}", f'width="{f.bar_w:g}"'
            parts.append(f'<rect class="s" x="{x}" y="{sy:g}" {bar} height="{sh:g}"></rect>')
            parts.append(f'<rect class="f" x="{x}" y="{fy:g}" {bar} height="{fh:g}"></rect>')
        parts.append(f'<polyline class="a" points="{self.accepted}"></polyline>')
        for i, tip in enumerate(self.tips):
            parts.append(
                f'<rect class="slot" x="{i * f.slot_w:g}" y="0" width="{f.slot_w:g}" '
                f'height="{h}"><title>{escape(tip)}</title></rect>'
            )
        parts.append("</svg>")
        return Markup("".join(parts))


def window(now: float) -> list[int]:
    """The starts of the last ``WINDOW_MINUTES`` minutes, oldest first, the last
    one the minute ``now`` is in."""
    last = minute_of(now)
    return [last - MINUTE_S * (WINDOW_MINUTES - 1 - i) for i in range(WINDOW_MINUTES)]


def throughput(
    rows: list[Activity], names: list[str], minutes: list[int]
) -> dict[str, dict[str, Series]]:
    """Per target named, a ``Series`` per kind (a deleted target's counts go with it)."""
    index = {minute: i for i, minute in enumerate(minutes)}
    counts = {name: {kind: [0] * len(minutes) for kind in KINDS} for name in names}
    for row in rows:
        i = index.get(row.minute)
        if i is not None and row.target in counts:
            for kind in KINDS:
                counts[row.target][kind][i] += getattr(row, kind)
    return {
        name: {kind: Series(values) for kind, values in kinds.items()}
        for name, kinds in counts.items()
    }


def nice(n: int) -> int:
    """The least of 1, 2, 5, 10, 20, 50, … that is at least ``n``: the chart's scale."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= n:
                return m * step
        step *= 10


def chart(name: str, series: dict[str, Series], minutes: list[int]) -> Chart:
    accepted, succeeded, failed = (series[kind].counts for kind in KINDS)
    busiest = max([*accepted, *(s + f for s, f in zip(succeeded, failed, strict=True))], default=0)
    top = nice(max(busiest, 1))
    scale = (FRAME.baseline - FRAME.top_y) / top

    def y(n: int) -> float:
        return round(FRAME.baseline - n * scale, 1)

    points = " ".join(
        f"{i * FRAME.slot_w + FRAME.slot_w / 2:g},{y(n):g}" for i, n in enumerate(accepted)
    )
    bars = []
    for s, f in zip(succeeded, failed, strict=True):
        bars.append((y(s), round(s * scale, 1), y(s + f), round(f * scale, 1)))
    tips = [
        f"{_clock(minute)}: {a} accepted, {s} succeeded, {f} failed"
        for minute, a, s, f in zip(minutes, accepted, succeeded, failed, strict=True)
    ]
    label = (
        f"{name}, last {len(minutes)} minutes: {sum(accepted)} accepted, "
        f"{sum(succeeded)} succeeded, {sum(failed)} failed"
    )
    return Chart(top=top, accepted=points, bars=bars, tips=tips, label=label)


@functools.lru_cache(maxsize=256)
def _clock(minute: int) -> str:
    return datetime.fromtimestamp(minute, UTC).strftime("%H:%M UTC")


@dataclass(frozen=True, slots=True)
class Overview:
    now: float
    minutes: list[int]
    #: each target as ``GET /targets`` shows it
    targets: list[dict[str, Any]]
    throughput: dict[str, dict[str, Series]]
    charts: dict[str, Chart]


async def overview(gateway: Gateway) -> Overview:
    """What the overview shows right now: a few reads, each of a row per target."""
    now = gateway.clock.now()
    store = gateway.store
    records = await store.list_targets()
    backlog = await store.backlog_by_target()
    targets = [
        target_json(
            t, live=gateway.dispatcher.live_state(t.name), backlog=backlog.get(t.name, {}), now=now
        )
        for t in records
    ]
    minutes = window(now)
    rows = await store.activity(minutes[0], minutes[-1] + MINUTE_S)
    flows = throughput(rows, [t.name for t in records], minutes)
    charts = {name: chart(name, series, minutes) for name, series in flows.items()}
    return Overview(now=now, minutes=minutes, targets=targets, throughput=flows, charts=charts)


def live_json(view: Overview, *, newest_failed: str | None) -> dict[str, Any]:
    """``/ui/live.json``: the overview as the page's script redraws it."""
    return {
        "now": rfc3339(view.now),
        "minutes": [rfc3339(m) for m in view.minutes],
        "targets": [
            {
                "name": t["name"],
                "enabled": t["enabled"],
                "max_concurrency": t["max_concurrency"],
                **t["state"],
                "throughput": {
                    kind: {
                        "counts": s.counts,
                        "total": s.total,
                        "per_minute": round(s.per_minute, 1),
                    }
                    for kind, s in view.throughput[t["name"]].items()
                },
                "chart": _chart_json(view.charts[t["name"]]),
            }
            for t in view.targets
        ],
        "newest_failed": newest_failed,
    }


def _chart_json(c: Chart) -> dict[str, Any]:
    return {"top": c.top, "accepted": c.accepted, "bars": c.bars, "tips": c.tips, "label": c.label}
