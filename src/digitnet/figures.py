"""Saving matplotlib figures, shared by every pipeline that draws (data exploration, evaluation
reports, the model card).

Figures are built with `matplotlib.figure.Figure` directly (no pyplot state, no display needed),
so they work on headless machines and in threads; `save_figure` writes them as PNG.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from matplotlib.figure import Figure

from digitnet.fileio import atomic_write_bytes

DPI = 150  # sharp in reports; the figures come out at 30-100 kB each


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Save `fig` as PNG (creating folders, atomically), then close it so it frees its memory.

    Returns:
        The path written.
    """
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())  # a reader never sees half a PNG
    fig.clear()
    if getattr(fig, "number", None) is not None:  # a pyplot figure: also drop pyplot's reference
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path
