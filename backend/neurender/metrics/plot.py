"""A PNG plot of per-pair warp error (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def plot_warp_error(series: Mapping[str, Sequence[float]], path: Path, title: str = "Warp error per frame pair") -> Path:
    """Line plot of one or more per-pair warp-error series (label -> values) written to ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2), dpi=100)  # no pyplot: no global backend or figure state is touched
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, values in series.items():
        v = np.asarray(values, dtype=float)
        ax.plot(np.arange(len(v)), v, marker="o", markersize=3, label=label)
    ax.set_xlabel("frame pair t -> t+1")
    ax.set_ylabel("warp error (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
