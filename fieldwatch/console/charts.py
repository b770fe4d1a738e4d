"""ECharts options for the Device page, built from the domain's chart data (pure: data in, a dict out).

One chart per series: raw points as a line, or buckets as the average line inside a min/max band (two
stacked series: the minimum, invisible, then ``max - min`` filled on top of it); the device's alarm
episodes shaded (``markArea``), an anomaly score's threshold as a dashed line (``markLine``); zoom and
pan with the mouse wheel, a drag, or the slider (``dataZoom``). Times travel as epoch milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ingest.device_view import ChartData
from rules.device_alarms import Episode

#: Episode shading by severity (light enough to read the line through it).
EPISODE_COLORS = {
    "critical": "rgba(198,40,40,0.22)",
    "major": "rgba(239,108,0,0.22)",
    "minor": "rgba(249,168,37,0.24)",
    "warning": "rgba(92,143,191,0.22)",
}
LINE = "#2f7d8c"
BAND = "rgba(47,125,140,0.22)"
THRESHOLD = "#c62828"
MUTED = "#8a94a0"


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def episode_areas(found: Sequence[Episode], start: datetime, end: datetime) -> list[list[dict[str, Any]]]:
    """``markArea`` pairs for the episodes, clipped to ``[start, end)``; an open one runs to ``end``; each is at
    least 1/100 of the range wide (inside it), so one that just opened shows."""
    areas: list[list[dict[str, Any]]] = []
    for e in found:
        lo, hi = max(e.start, start), min(e.end or end, end)
        # at least 1/100 of the range wide, inside it, so an alarm that just opened (or cleared at once) is seen
        least = (end - start) / 100
        if hi - lo < least:
            hi = min(lo + least, end)
            lo = min(lo, hi - least)
        areas.append(
            [
                {
                    "name": f"{e.severity} · {e.rule_name}",
                    "xAxis": _ms(lo),
                    "itemStyle": {"color": EPISODE_COLORS.get(e.severity, "rgba(127,127,127,0.16)")},
                },
                {"xAxis": _ms(hi)},
            ]
        )
    return areas


def chart_option(data: ChartData, found: Sequence[Episode], threshold: float | None = None) -> dict[str, Any]:
    """The ECharts option of one series' chart: line or band, episodes shaded, threshold drawn when given."""
    marks: dict[str, Any] = {
        "markArea": {"silent": False, "label": {"show": False}, "data": episode_areas(found, data.start, data.end)}
    }
    if threshold is not None:
        marks["markLine"] = {
            "symbol": "none",
            "silent": True,
            "lineStyle": {"color": THRESHOLD, "type": "dashed", "width": 1.5},
            "label": {"formatter": f"threshold {threshold:g}", "position": "insideEndTop", "color": THRESHOLD},
            "data": [{"yAxis": threshold}],
        }
    series: list[dict[str, Any]]
    if data.resolution.raw:
        series = [
            {
                "name": data.tag,
                "type": "line",
                "showSymbol": len(data.points) < 60,
                "symbolSize": 5,
                "sampling": "lttb",
                "lineStyle": {"width": 1.5, "color": LINE},
                "itemStyle": {"color": LINE},
                "data": [[_ms(p.time), p.value] for p in data.points],
                **marks,
            }
        ]
    else:
        series = [
            {
                "name": "min",
                "type": "line",
                "stack": "band",
                "stackStrategy": "all",  # a band below zero must still stack max - min on min
                "symbol": "none",
                "lineStyle": {"opacity": 0},
                "data": [[_ms(b.time), b.min] for b in data.buckets],
                "tooltip": {"show": False},
            },
            {
                "name": "min–max",
                "type": "line",
                "stack": "band",
                "stackStrategy": "all",  # a band below zero must still stack max - min on min
                "symbol": "none",
                "lineStyle": {"opacity": 0},
                "areaStyle": {"color": BAND},
                "itemStyle": {"color": BAND},
                "data": [[_ms(b.time), b.max - b.min] for b in data.buckets],
                "tooltip": {"show": False},
            },
            {
                "name": "average",
                "type": "line",
                "symbol": "none",
                "lineStyle": {"width": 1.5, "color": LINE},
                "itemStyle": {"color": LINE},
                "data": [[_ms(b.time), round(b.avg, 6)] for b in data.buckets],
                **marks,
            },
        ]
    return {
        "animation": False,
        "backgroundColor": "transparent",
        "textStyle": {"color": MUTED},
        "grid": {"left": 56, "right": 24, "top": 28, "bottom": 72},
        "tooltip": {"trigger": "axis"},
        "legend": {
            "show": not data.resolution.raw,
            "top": 0,
            "right": 8,
            "textStyle": {"color": MUTED},
            "data": ["average", "min–max"],
        },
        "xAxis": {"type": "time", "min": _ms(data.start), "max": _ms(data.end), "axisLabel": {"hideOverlap": True}},
        "yAxis": {
            "type": "value",
            "scale": True,
            "name": data.unit,
            "axisLabel": {"formatter": "{value}"},
            "splitLine": {"lineStyle": {"color": "rgba(127,127,127,0.18)"}},
        },
        "dataZoom": [
            {"type": "inside", "filterMode": "none", "start": 0, "end": 100},
            {"type": "slider", "height": 22, "bottom": 12, "filterMode": "none", "start": 0, "end": 100},
        ],
        "series": series,
    }


def with_view(option: dict[str, Any], start_ms: int | None, end_ms: int | None) -> dict[str, Any]:
    """``option`` showing ``[start_ms, end_ms]`` of its axis (``None``: that end of the range, so a view up
    to "now" keeps following new data): a redraw keeps where the user had zoomed and panned (pure)."""
    zooms = []
    for zoom in option.get("dataZoom", []):
        zoom = dict(zoom)
        if start_ms is not None:
            zoom.pop("start", None)
            zoom["startValue"] = start_ms
        if end_ms is not None:
            zoom.pop("end", None)
            zoom["endValue"] = end_ms
        zooms.append(zoom)
    return {**option, "dataZoom": zooms}
