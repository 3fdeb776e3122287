"""The data report as one figure (logged next to the data set on every training run): the missing
share per region per source, and the coordinate density per region."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from signpose.datasets.report import REGIONS

MAX_LABELLED_SOURCES = 40  # beyond this the rows are unlabelled (one pixel row per source)


def _regions_of(report: Mapping) -> list[str]:
    present = set(report.get("regions", {}))
    return [r for r in REGIONS if r in present] + sorted(present - set(REGIONS))


def missing_matrix(report: Mapping) -> tuple[np.ndarray, list[str], list[str]]:
    """(sources x regions) missing shares, the source keys and the region names."""
    regions = _regions_of(report)
    sources = report.get("sources", [])
    matrix = np.array([[row.get("regions", {}).get(r, {}).get("missing_share", np.nan) for r in regions]
                       for row in sources], np.float64).reshape(len(sources), len(regions))
    return matrix, [row["key"] for row in sources], regions


def report_figure(report: Mapping, title: str = ""):
    """A matplotlib Figure (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    matrix, keys, regions = missing_matrix(report)
    figure = plt.figure(figsize=(11, 1.6 * max(len(regions), 2) + 0.8), dpi=100)
    grid = figure.add_gridspec(max(len(regions), 1), 2, width_ratios=(1.1, 1.0), wspace=0.35, hspace=0.6)
    heat = figure.add_subplot(grid[:, 0])
    if len(keys):
        image = heat.imshow(matrix, aspect="auto", vmin=0.0, vmax=1.0, cmap="magma_r", interpolation="nearest")
        figure.colorbar(image, ax=heat, fraction=0.05, label="missing share")
        if len(keys) <= MAX_LABELLED_SOURCES:
            heat.set_yticks(range(len(keys)), [key[-28:] for key in keys], fontsize=6)
        else:
            heat.set_ylabel(f"{len(keys)} sources")
    else:
        heat.text(0.5, 0.5, "no per-source rows", ha="center", va="center", transform=heat.transAxes)
    heat.set_xticks(range(len(regions)), regions, rotation=30, fontsize=8)
    heat.set_title("missing share per region per source", fontsize=9)
    for i, region in enumerate(regions):
        stats = report["regions"][region]
        axis = figure.add_subplot(grid[i, 1])
        for name, colour in (("x_hist", "tab:blue"), ("y_hist", "tab:orange")):
            hist = np.asarray(stats.get(name, []), np.float64)
            if hist.sum() > 0:
                centres = (np.arange(len(hist)) + 0.5) / len(hist)
                axis.plot(centres, hist / hist.sum() * len(hist), color=colour, label=name[0], linewidth=1)
        axis.set_xlim(0, 1)
        axis.set_title(f"{region}: coordinate density (missing {stats.get('missing_share', 0):.1%})", fontsize=8)
        axis.tick_params(labelsize=6)
        if i == 0:
            axis.legend(fontsize=6, loc="upper right")
    if title:
        figure.suptitle(title, fontsize=9)
    return figure
