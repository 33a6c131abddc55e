"""Order statistics the benchmarks report (medians and percentiles: these machines are noisy)."""

from __future__ import annotations

import math
import statistics


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def median(values: list[float | None]) -> float | None:
    """The median of the values present, or None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
