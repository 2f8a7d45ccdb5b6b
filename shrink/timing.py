"""Latency figures that can be trusted: adaptive timing, models interleaved, threads pinned, spread checked.

Each callable is timed with ``torch.utils.benchmark``'s ``blocked_autorange`` (blocks of calls long enough
that timer overhead vanishes, repeated until a time budget is spent). Models compared with each other are
timed in alternating rounds, so a burst of load on a shared machine hits all of them alike. The torch
thread count is pinned for the measurement and reported with it. A figure whose interquartile range is
wide against its median, or that rests on too few blocks, is marked ``noisy``; tables print it as such
instead of as a result.

Usage::

    stats = time_interleaved({"teacher": lambda: teacher(**batch), "student": lambda: student(**batch)})
    stats["student"]["median_ms"], stats["student"]["noisy"]
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch.utils import benchmark

# A figure is noisy when its interquartile range exceeds this fraction of its median ...
NOISY_SPREAD = 0.2
# ... or when fewer blocks than this were timed (too few to estimate a spread at all).
MIN_BLOCKS = 5


def time_interleaved(calls: Mapping[str, Callable[[], Any]], *, threads: int | None = None,
                     min_time_s: float = 0.5, rounds: int = 3) -> dict[str, dict[str, Any]]:
    """Time each callable for about ``min_time_s`` seconds in all, in ``rounds`` alternating rounds.

    ``threads`` (default: torch's current count) is pinned for torch while timing. Each round starts with
    blocked_autorange's own block-size search, which also warms the callable up again after the others ran.
    Usage: ``time_interleaved({"a": f, "b": g}, min_time_s=2)["a"]["median_ms"]``
    """
    threads = threads or torch.get_num_threads()
    timers = {name: benchmark.Timer("call()", globals={"call": call}, num_threads=threads)
              for name, call in calls.items()}
    per_call: dict[str, list[float]] = {name: [] for name in calls}
    counts = dict.fromkeys(calls, 0)
    with torch.inference_mode():
        for _ in range(rounds):
            for name, timer in timers.items():
                measurement = timer.blocked_autorange(min_run_time=min_time_s / rounds)
                per_call[name].extend(measurement.times)
                counts[name] += measurement.number_per_run * len(measurement.raw_times)
    return {name: summarise(per_call[name], counts[name], threads) for name in calls}


def summarise(per_call_s: list[float], calls: int, threads: int) -> dict[str, Any]:
    """Median, spread and the noisy flag of per-call times (one per block, in seconds), in milliseconds.

    Usage: ``summarise([0.010, 0.011, 0.010, 0.012, 0.010], calls=50, threads=2)["noisy"] is False``
    """
    ms = np.asarray(per_call_s) * 1000
    p10, q1, median, q3, p90 = (float(value) for value in np.percentile(ms, [10, 25, 50, 75, 90]))
    spread = (q3 - q1) / median if median > 0 else float("inf")
    return {"median_ms": median, "iqr_ms": q3 - q1, "p10_ms": p10, "p90_ms": p90, "spread": spread,
            "blocks": len(ms), "calls": calls, "threads": threads,
            "noisy": bool(spread > NOISY_SPREAD or len(ms) < MIN_BLOCKS)}


def shown(stats: Mapping[str, Any]) -> float | str:
    """What a table prints for one latency: the median in ms, or a warning when the figure is noisy.

    Usage: ``row["b1 ms"] = shown(stats)  # 9.71, or "noisy: 9.7 (IQR 85%)"``
    """
    if stats["noisy"]:
        return f"noisy: {stats['median_ms']:.3g} (IQR {stats['spread']:.0%})"
    return stats["median_ms"]


def latency_columns(latency: Mapping[str, Mapping[str, Any]]) -> dict[str, float | str]:
    """Table columns for a model's latency per batch size: the median (``latency b1 ms``, noisy ones flagged)
    and, beside it, the 90th percentile (``b1 p90 ms``).

    Usage: ``row.update(latency_columns(figures["latency"]))``
    """
    columns: dict[str, float | str] = {}
    for size, stats in latency.items():
        columns[f"latency b{size} ms"] = shown(stats)
        columns[f"b{size} p90 ms"] = stats["p90_ms"]
    return columns
