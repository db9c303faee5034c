"""The success rate of seeded episodes and its 95% Wilson score interval, shared by `mvp eval` and
`mvp demo`; plain Python, so the processes that only report a success rate load no torch or ROS."""
from __future__ import annotations

import math

Z_95 = 1.959963984540054  # standard normal quantile for a two-sided 95% interval


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sensible at 0 and at 1, unlike +-1.96 sigma)."""
    if trials < 1:
        raise ValueError("the Wilson interval needs at least one trial")
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half_width = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)
