"""Inline SVG charts for the HTML report: no JavaScript, no fonts or images to fetch, so a report
opens anywhere, offline. Each chart is an ``<svg role="img">`` with a ``<title>`` and a
``<desc>`` saying in words what it shows, and a ``data-points`` attribute (how many data points it
draws; the tests check that no chart is empty). Colours always come with a legend or a label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from html import escape
from itertools import pairwise

from abstats.engine import words

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f")
GOOD = "#1a7f37"
BAD = "#cf222e"
NEUTRAL = "#57606a"
# relative effects are drawn within +-1000% (beyond that the control's value is near zero and the
# percentage says little; the table prints such bounds as ">+1000%")
RELATIVE_LIMIT = 10.0
REFERENCE = "#8c959f"  # the reference distribution in drift charts (no variant has this colour)
# Charts are drawn 480 units wide and scaled to their box (about 600 px in the two-column desktop
# grid, about 350 px on a phone). The stylesheet sets chart text to 12 units, 15 on narrow screens
# (about 10.5 px on a phone); layout here reserves room for the larger size.
WIDTH = 480
HEIGHT = 220
CHAR = 8.5  # width of one character of chart text at the larger size, in chart units


def variant_colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _svg(width: int, height: int, title: str, desc: str, points: int, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" class="chart" data-points="{points}" '
        f'preserveAspectRatio="xMidYMid meet">'
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>{body}</svg>"
    )


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values within [low, high], about ``count`` of them and never fewer than three
    (a range that a round step covers only once gets a finer step)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    ticks: list[float] = []
    for wanted in range(count, count + 8):
        raw = (high - low) / max(wanted - 1, 1)
        magnitude = 10 ** math.floor(math.log10(raw))
        step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
        value = math.ceil(low / step) * step
        ticks = []
        while value <= high + step * 1e-9:
            ticks.append(round(value, 12) + 0.0)
            value += step
        if len(ticks) >= 3:
            break
    return ticks


def _fmt(value: float, percent: bool) -> str:
    return words.tick(value, percent)


def _time_label(moment: datetime, span_seconds: float) -> str:
    if span_seconds < 2 * 86400:
        return moment.strftime("%H:%M:%S") if span_seconds < 600 else moment.strftime("%H:%M")
    return moment.strftime("%m-%d")


class _Frame:
    """Maps data to a plotting area with margins for the axes, their tick labels and the y axis's
    title (its unit)."""

    def __init__(
        self,
        width: int,
        height: int,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        left: int = 78,
        right: int = 14,
        top: int = 14,
        bottom: int = 30,
    ) -> None:
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = left, right, top, bottom
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1

    def x(self, value: float) -> float:
        span = self.width - self.left - self.right
        return round(self.left + span * (value - self.x0) / (self.x1 - self.x0), 2)

    def y(self, value: float) -> float:
        span = self.height - self.top - self.bottom
        return round(self.top + span * (1 - (value - self.y0) / (self.y1 - self.y0)), 2)

    def y_axis(self, ticks: Sequence[float], percent: bool, title: str = "") -> str:
        parts = []
        for t in ticks:
            y = self.y(t)
            parts.append(
                f'<line x1="{self.left}" x2="{self.width - self.right}" y1="{y}" y2="{y}" '
                f'class="grid"/><text x="{self.left - 6}" y="{y + 4}" text-anchor="end" '
                f'class="tick">{escape(_fmt(t, percent))}</text>'
            )
        if title:
            middle = (self.top + self.height - self.bottom) / 2
            parts.append(
                f'<text x="0" y="0" transform="translate(14 {middle:.1f}) rotate(-90)" '
                f'text-anchor="middle" class="axis-title">{escape(title)}</text>'
            )
        return "".join(parts)

    def x_time_axis(self, start: datetime, end: datetime, count: int = 4) -> str:
        """Time ticks; the first is anchored at its start and the last at its end, so neither is
        cut off at the edge of the chart."""
        span = max((end - start).total_seconds(), 1.0)
        parts = []
        for i in range(count):
            moment = datetime.fromtimestamp(
                start.timestamp() + span * i / (count - 1), tz=start.tzinfo
            )
            x = self.x(moment.timestamp())
            anchor = "start" if i == 0 else ("end" if i == count - 1 else "middle")
            parts.append(
                f'<text x="{x}" y="{self.height - self.bottom + 18}" text-anchor="{anchor}" '
                f'class="tick">{escape(_time_label(moment, span))}</text>'
            )
        return "".join(parts)


def effect_over_time(
    points: Sequence[tuple[datetime, float, float, float]],
    *,
    title: str,
    relative: bool,
    good_direction: str | None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """The cumulative effect (line) and its confidence band (shaded) at each analysis, against 0."""
    if not points:
        return ""
    xs = [p[0].timestamp() for p in points]
    lows = [p[2] for p in points]
    highs = [p[3] for p in points]
    effects = [p[1] for p in points]
    # keep the y range readable: the latest interval always fits whole (with room around it);
    # the wide intervals of the first analyses are clipped at 3x its reach (and the chart says so)
    last = points[-1]
    reach = max(abs(last[2]), abs(last[3]), max(abs(e) for e in effects), 1e-9)
    cap = min(3 * reach, RELATIVE_LIMIT) if relative else 3 * reach
    y_low = max(min(min(lows), 0.0), -cap)
    y_high = min(max(max(highs), 0.0), cap)
    clipped = min(lows) < -cap or max(highs) > cap
    pad = (y_high - y_low) * 0.08 or 0.01
    single = len(points) == 1  # one analysis so far: a dot with its interval, not a band
    x_range = (xs[0] - 1.0, xs[0] + 1.0) if single else (min(xs), max(xs))
    frame = _Frame(width, height, x_range, (y_low - pad, y_high + pad))

    def clip(v: float) -> float:
        return min(max(v, frame.y0), frame.y1)

    band_top = " ".join(f"{frame.x(x)},{frame.y(clip(h))}" for x, h in zip(xs, highs, strict=True))
    band_bottom = " ".join(
        f"{frame.x(x)},{frame.y(clip(lo))}"
        for x, lo in zip(reversed(xs), reversed(lows), strict=True)
    )
    line = " ".join(f"{frame.x(x)},{frame.y(clip(e))}" for x, e in zip(xs, effects, strict=True))
    excludes_zero = last[2] > 0 or last[3] < 0
    colour = NEUTRAL
    if excludes_zero and good_direction in ("increase", "decrease"):
        good = (last[1] > 0) == (good_direction == "increase")
        colour = GOOD if good else BAD
    unit = "relative effect (%)" if relative else "effect (difference)"
    axes = frame.y_axis(_nice_ticks(frame.y0, frame.y1), relative, unit) + (
        f'<line x1="{frame.left}" x2="{width - frame.right}" y1="{frame.y(0)}" '
        f'y2="{frame.y(0)}" class="zero"/>'
    )
    if single:
        cx = frame.x(xs[0])
        body = (
            axes + f'<line x1="{cx}" x2="{cx}" y1="{frame.y(clip(highs[0]))}" '
            f'y2="{frame.y(clip(lows[0]))}" stroke="{colour}" stroke-opacity="0.35" '
            'stroke-width="10"/>'
            + f'<circle cx="{cx}" cy="{frame.y(clip(effects[0]))}" r="5" fill="{colour}"/>'
            + f'<text x="{cx}" y="{height - frame.bottom + 18}" text-anchor="middle" '
            f'class="tick">{escape(last[0].strftime("%Y-%m-%d %H:%M"))} (first analysis)</text>'
        )
    else:
        body = (
            axes
            + f'<polygon points="{band_top} {band_bottom}" fill="{colour}" fill-opacity="0.18"/>'
            + f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>'
            + frame.x_time_axis(points[0][0], points[-1][0])
        )
    desc = (
        f"{len(points)} {'analysis' if single else 'analyses'}; latest effect "
        + words.effect_parts(
            "relative" if relative else "absolute", last[1], last[1], last[2], last[3]
        )
        + (
            "; intervals beyond the range shown are cut off at the edge of the chart"
            if clipped
            else ""
        )
    )
    return _svg(width, height, title, desc, len(points), body)


def traffic_share(
    epochs: Sequence[tuple[datetime, datetime, dict[str, float]]],
    variants: Sequence[str],
    markers: Sequence[tuple[datetime, str]],
    *,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Stacked traffic shares per weight epoch (steps), with a marker at every decision. Marker
    labels are staggered onto rows so that none overlaps another."""
    if not epochs:
        return ""
    epochs = list(epochs)
    start = epochs[0][0]
    end = max(e[1] for e in epochs)
    # the weights in force now (e.g. 100% to a promoted winner, set at the last analysis) get a
    # visible strip at the right even when their period has barely begun
    tail = (end - start) * 0.06
    began, ended, weights = epochs[-1]
    if ended - began < tail:
        epochs[-1] = (began, began + tail, weights)
        end = max(end, began + tail)
    line_height = 17
    frame = _Frame(width, height, (start.timestamp(), end.timestamp()), (0.0, 1.0))
    parts = [frame.y_axis([0, 0.25, 0.5, 0.75, 1.0], True, "share of traffic (%)").replace("+", "")]
    for began, ended, weights in epochs:
        total = sum(max(w, 0.0) for w in weights.values()) or 1.0
        floor = 0.0
        x0, x1 = frame.x(began.timestamp()), frame.x(ended.timestamp())
        for i, variant in enumerate(variants):
            share = max(weights.get(variant, 0.0), 0.0) / total
            if share <= 0:
                continue
            y_top, y_bottom = frame.y(floor + share), frame.y(floor)
            parts.append(
                f'<rect x="{x0}" y="{y_top}" width="{max(x1 - x0, 0.5):.2f}" '
                f'height="{max(y_bottom - y_top, 0):.2f}" fill="{variant_colour(i)}">'
                f"<title>{escape(variant)}: {words.share(share * 100)} from {words.when(began)}</title>"
                "</rect>"
            )
            floor += share
    right_edge = width - frame.right
    rows = max(int((height - frame.top - frame.bottom) // line_height) - 1, 1)
    row_spans: list[list[tuple[float, float]]] = [[] for _ in range(rows)]
    for moment, label in markers:
        x = frame.x(moment.timestamp())
        name = label.split(":")[0]
        text_width = CHAR * len(name) + 6
        # near the right edge the label goes left of its line, so it is never cut off
        left_of_line = x + 3 + text_width > right_edge
        x0 = x - 3 - text_width if left_of_line else x + 3
        span = (x0, x0 + text_width)
        row = next(
            (
                i
                for i, taken in enumerate(row_spans)
                if all(span[1] <= a or span[0] >= b for a, b in taken)
            ),
            None,
        )
        parts.append(
            f'<line x1="{x}" x2="{x}" y1="{frame.top}" y2="{height - frame.bottom}" '
            f'class="marker"><title>{escape(label)}</title></line>'
        )
        if row is None:  # no room left: the line keeps its tooltip, the timeline has the rest
            continue
        row_spans[row].append(span)
        anchor = ' text-anchor="end"' if left_of_line else ""
        parts.append(
            f'<text x="{x - 3 if left_of_line else x + 3}" y="{frame.top + 13 + line_height * row}"'
            f'{anchor} class="marker-label">{escape(name)}</text>'
        )
    parts.append(frame.x_time_axis(start, end))
    desc = f"{len(epochs)} weight periods, {len(markers)} decisions"
    return _svg(width, height, "Traffic share per variant", desc, len(epochs), "".join(parts))


BUCKETS = (
    (1, "second"),
    (5, "5 seconds"),
    (15, "15 seconds"),
    (60, "minute"),
    (300, "5 minutes"),
    (900, "15 minutes"),
    (3600, "hour"),
    (6 * 3600, "6 hours"),
    (86400, "day"),
    (7 * 86400, "week"),
)
MAX_BUCKETS = 36


def time_bucket(span_seconds: float) -> tuple[int, str]:
    """The bucket for counting new units over a run of ``span_seconds``: the smallest that gives
    at most ``MAX_BUCKETS`` bars (a 40-second run gets 5-second bars, a week gets days)."""
    for seconds, name in BUCKETS:
        if span_seconds / seconds < MAX_BUCKETS:
            return seconds, name
    return BUCKETS[-1]


def _bucket_label(label: str, bucket: int) -> str:
    """Axis text of a bucket start: ``2026-11-20T11:38:05`` -> ``11:38:05`` (or ``11:38``,
    ``11-20``)."""
    if "T" not in label:
        return label[5:]
    if bucket >= 86400:
        return label[5:10]
    return label[11:19] if bucket < 60 else label[11:16]


def bucket_of(rows: Sequence[tuple[str, str, int]]) -> tuple[int, str]:
    """The bucket the rows were counted in: a date alone is a day; otherwise the smallest gap
    between bucket starts (a single bucket: by its label)."""
    labels = sorted({label for label, _, _ in rows})
    if not labels or "T" not in labels[0]:
        return 86400, "day"
    moments = [datetime.fromisoformat(label).timestamp() for label in labels]
    gaps = [b - a for a, b in pairwise(moments) if b > a]
    smallest = min(gaps) if gaps else 1.0
    return next(((s, n) for s, n in BUCKETS if s >= smallest - 0.5), BUCKETS[-1])


def daily_bars(
    rows: Sequence[tuple[str, str, int]],
    variants: Sequence[str],
    *,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Units first exposed per time bucket (``bucket_of``), one bar per variant per bucket."""
    if not rows:
        return ""
    bucket, bucket_name = bucket_of(rows)
    days = sorted({day for day, _, _ in rows})
    counts = {(day, variant): n for day, variant, n in rows}
    top = max(n for _, _, n in rows) or 1
    frame = _Frame(width, height, (0.0, float(len(days))), (0.0, top * 1.1))
    slot = (width - frame.left - frame.right) / len(days)
    bar = max(slot * 0.8 / max(len(variants), 1), 1.0)
    parts = [frame.y_axis(_nice_ticks(0, top * 1.1, 4), False, f"new units per {bucket_name}")]
    labels = [_bucket_label(day, bucket) for day in days]
    every = max(math.ceil((CHAR * max(len(label) for label in labels) + 8) / slot), 1)
    for d, day in enumerate(days):
        for i, variant in enumerate(variants):
            n = counts.get((day, variant), 0)
            x = frame.left + d * slot + slot * 0.1 + i * bar
            y = frame.y(n)
            parts.append(
                f'<rect x="{x:.2f}" y="{y}" width="{bar:.2f}" height="{frame.y(0) - y:.2f}" '
                f'fill="{variant_colour(i)}"><title>{escape(day)} {escape(variant)}: {n:,}'
                "</title></rect>"
            )
        if d % every == 0:
            parts.append(
                f'<text x="{frame.left + (d + 0.5) * slot:.2f}" y="{height - frame.bottom + 18}" '
                f'text-anchor="middle" class="tick">{escape(labels[d])}</text>'
            )
    desc = f"{len(days)} buckets of one {bucket_name}, {sum(counts.values()):,} units"
    return _svg(
        width, height, f"New units exposed per {bucket_name}", desc, len(rows), "".join(parts)
    )


def drift_histogram(
    labels: Sequence[str],
    reference: Sequence[float],
    current: Sequence[float],
    *,
    title: str,
    colour: str = PALETTE[1],
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Reference (grey) vs current (``colour``, the variant's) share per bin, side by side."""
    if not labels or not reference or not current:
        return ""
    ref_total = sum(reference) or 1.0
    cur_total = sum(current) or 1.0
    ref = [r / ref_total for r in reference]
    cur = [c / cur_total for c in current]
    top = max(max(ref), max(cur)) or 1.0
    frame = _Frame(width, height, (0.0, float(len(labels))), (0.0, top * 1.1))
    slot = (width - frame.left - frame.right) / len(labels)
    parts = [frame.y_axis(_nice_ticks(0, top * 1.1, 4), True, "share (%)").replace("+", "")]
    for i, label in enumerate(labels):
        for j, (share, fill, name) in enumerate(
            ((ref[i], REFERENCE, "reference"), (cur[i], colour, "current"))
        ):
            x = frame.left + i * slot + slot * 0.1 + j * slot * 0.4
            y = frame.y(share)
            parts.append(
                f'<rect x="{x:.2f}" y="{y}" width="{slot * 0.4:.2f}" '
                f'height="{frame.y(0) - y:.2f}" fill="{fill}"><title>{escape(label)} '
                f"{name}: {words.share(share * 100)}</title></rect>"
            )
    # a label under every bin that has room for one
    every = max(math.ceil((CHAR * max(len(label) for label in labels) + 8) / slot), 1)
    for i, label in enumerate(labels):
        if i % every == 0:
            parts.append(
                f'<text x="{frame.left + (i + 0.5) * slot:.2f}" '
                f'y="{height - frame.bottom + 18}" text-anchor="middle" class="tick">'
                f"{escape(label)}</text>"
            )
    desc = (
        f"{len(labels)} bins ({labels[0]} to {labels[-1]}), share of the reference vs the "
        "current window"
    )
    return _svg(width, height, title, desc, len(labels), "".join(parts))


def axis_reach(bounds: Sequence[float], relative: bool) -> float:
    """A round half-width for the interval bars of one metric: the widest bound (within +-1000%
    for a relative effect) with some room, rounded up to 1, 2 or 5 times a power of ten."""
    finite = [abs(b) for b in bounds if math.isfinite(b)]
    reach = max(finite, default=0.0)
    if relative:
        reach = min(reach, RELATIVE_LIMIT)
    reach = reach * 1.05 or (0.01 if relative else 1.0)
    magnitude: float = 10.0 ** math.floor(math.log10(reach))
    return float(next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= reach))


def interval_bar(
    low: float | None,
    high: float | None,
    estimate: float | None,
    *,
    scale: float,
    colour: str,
    relative: bool = True,
    width: int = 150,
    height: int = 36,
) -> str:
    """A horizontal confidence interval against a zero line, on an axis from ``-scale`` to
    ``+scale`` labelled under the bar (the same axis for every variant of a metric). An interval
    beyond the axis is drawn to its edge with an arrow."""
    if low is None or high is None or estimate is None or scale <= 0:
        return ""
    if not all(math.isfinite(v) for v in (low, high, estimate)):
        return ""
    pad = 22
    mid = 11

    def x(v: float) -> float:
        v = min(max(v, -scale), scale)
        return round(pad + (width - 2 * pad) * (v + scale) / (2 * scale), 2)

    arrows = ""
    if low < -scale:
        arrows += f'<path d="M{x(-scale) - 5},{mid} l6,-4 v8 z" fill="{colour}"/>'
    if high > scale:
        arrows += f'<path d="M{x(scale) + 5},{mid} l-6,-4 v8 z" fill="{colour}"/>'
    ticks = "".join(
        f'<line x1="{x(v)}" x2="{x(v)}" y1="{mid + 7}" y2="{mid + 11}" class="axis"/>'
        f'<text x="{x(v)}" y="{height - 2}" text-anchor="middle">{escape(_fmt(v, relative))}</text>'
        for v in (-scale, 0.0, scale)
    )
    body = (
        f'<line x1="{pad}" x2="{width - pad}" y1="{mid + 7}" y2="{mid + 7}" class="axis"/>'
        + ticks
        + f'<line x1="{x(0)}" x2="{x(0)}" y1="1" y2="{mid + 7}" class="zero"/>'
        f'<line x1="{x(low)}" x2="{x(high)}" y1="{mid}" y2="{mid}" '
        f'stroke="{colour}" stroke-width="4" stroke-linecap="round"/>'
        f'<circle cx="{x(estimate)}" cy="{mid}" r="4" fill="{colour}"/>' + arrows
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" class="ci" data-points="1" aria-hidden="true">'
        f"{body}</svg>"
    )
