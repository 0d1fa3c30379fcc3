"""How every figure of the project is drawn and saved: one place, so all of them are fit for a paper.

Each figure is written twice, as a vector PDF (for a paper) and a PNG at ``PNG_DPI`` (for the
README and W&B); each optimizer is drawn with the colour, line style and marker of its
``lit_amsgrad.registry`` entry, so overlapping curves stay visible in every figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_amsgrad import registry

PNG_DPI = 200
SUFFIXES = (".png", ".pdf")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed), with the project's style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 9,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "legend.fontsize": 8,
            "legend.framealpha": 0.85,
            "pdf.fonttype": 42,  # TrueType in the PDF: editable text, accepted by publishers
            "lines.linewidth": 1.5,
        }
    )
    return plt


def optimizer_style(name: str, markevery: Any = 0.1) -> dict[str, Any]:
    """``plot`` keyword arguments for optimizer ``name``: its label, colour, line style, marker.

    ``markevery`` as matplotlib's; a float spaces markers evenly along the drawn line, and
    each optimizer's start there is shifted so that markers of coinciding curves interleave."""
    entry = registry.entry(name)
    if isinstance(markevery, float):
        index = registry.OPTIMIZERS.index(entry) if entry is not None else len(registry.OPTIMIZERS)
        markevery = (markevery * index / (len(registry.OPTIMIZERS) + 1), markevery)
    if entry is None:
        return {"label": name, "markevery": markevery, "marker": "x"}
    return {
        "label": entry.label,
        "color": entry.color,
        "ls": entry.linestyle,
        "marker": entry.marker,
        "markevery": markevery,
        "markersize": 4,
    }


def save_figure(fig: Any, stem: Path) -> list[Path]:
    """Write ``stem.png`` (``PNG_DPI``) and ``stem.pdf``, close ``fig``; returns both paths."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(suffix) for suffix in SUFFIXES]
    for path in paths:
        fig.savefig(path, dpi=PNG_DPI, bbox_inches="tight")
    plt.close(fig)
    return paths
