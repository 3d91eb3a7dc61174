"""The Fig. 2 curve of a labelled set: label noise against quantised distance to the class centroids.

Written as a PNG (matplotlib, headless) next to the noise tables, and as text lines for the terminal, so
`webjft noise` can show it without a display.
"""

from __future__ import annotations

import io
import os

import numpy as np

from index.noise import Curve
from pipelines.formats import atomic_write_bytes


def curve_png(curve: Curve, title: str) -> bytes:
    """PNG bytes: estimated noise per distance bucket (bars) and the verified noise with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    buckets = np.arange(len(curve.labels))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    try:
        ax.bar(buckets, 100 * curve.estimated, color="#8fb3d9", label="estimated (mean p_noisy)")
        has = curve.verified > 0
        if has.any():
            rate = 100 * curve.verified_rate[has]
            error = 100 * np.maximum(0, np.vstack([curve.verified_rate[has] - curve.verified_low[has],
                                                   curve.verified_high[has] - curve.verified_rate[has]]))
            ax.errorbar(buckets[has], rate, yerr=error, fmt="o-", color="#c0392b", capsize=3,
                        label="verified sample (95% interval)")
        ax.set_xticks(buckets, [f"{lo:.2f}-\n{hi:.2f}" for lo, hi in zip(curve.low, curve.high, strict=True)],
                      fontsize=7)
        ax.set_xlabel("distance to the nearest centroid of the label's class (÷ class median), quantised")
        ax.set_ylabel("labels wrong (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def write_curve_png(curve: Curve, path: str | os.PathLike[str], title: str) -> None:
    atomic_write_bytes(path, curve_png(curve, title))


def curve_lines(curve: Curve, width: int = 24) -> list[str]:
    """One text line per distance bucket: range, a bar of the estimated noise, and the verified rate."""
    lines = []
    for i in range(len(curve.labels)):
        estimated = float(curve.estimated[i])
        bar = "█" * int(round(estimated * width))
        verified = (f"(verified {100 * curve.verified_rate[i]:.0f}% of {int(curve.verified[i]):,})"
                    if curve.verified[i] else "")
        lines.append(f"{curve.low[i]:4.2f}-{curve.high[i]:4.2f} {bar:<{width}} {100 * estimated:4.1f}% {verified}")
    return lines
