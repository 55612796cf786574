"""Summaries over seeds shared by the benchmarks (imported from beside them)."""

from __future__ import annotations

import math
import statistics


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error s/√n (None for one value: JSON has no NaN)."""
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return statistics.fmean(values), se
