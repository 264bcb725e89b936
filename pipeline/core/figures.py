"""The figures of reports/evaluation.md and the cross-generator heatmap, drawn with matplotlib
(headless) from the JSON that the stages write, so that GitHub shows them without `dvc plots`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no display, no global figure state

LEAVE_ONE_OUT_ROW = "all but the column"


def _save(figure: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")


def crossgen_grid(matrix: dict[str, Any], metric: str = "ai_accuracy") -> tuple:
    """(row names, column names, values with NaN where undefined) of a cross-generator matrix:
    one row per trained-on source and the leave-one-source-out row."""
    sources = matrix["ai_sources"]
    rows = [*sources, LEAVE_ONE_OUT_ROW]
    values = np.full((len(rows), len(sources)), np.nan)
    for i, trained in enumerate(sources):
        for j, tested in enumerate(sources):
            value = matrix["trained_on"][trained].get("tested_on", {}).get(tested, {}).get(metric)
            values[i, j] = np.nan if value is None else value
    for j, tested in enumerate(sources):
        value = matrix["leave_one_out"].get(tested, {}).get(metric)
        values[-1, j] = np.nan if value is None else value
    return rows, sources, values


def draw_crossgen_heatmap(matrix: dict[str, Any], path: Path, title: str) -> None:
    """AI accuracy of each trained-on (row) and tested-on (column) pair, values written in."""
    rows, columns, values = crossgen_grid(matrix)
    figure = Figure(figsize=(1.6 + 1.1 * len(columns), 1.2 + 0.6 * len(rows)))
    axes = figure.subplots()
    image = axes.imshow(values, vmin=0, vmax=1, cmap="viridis")
    axes.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    axes.set_yticks(range(len(rows)), rows)
    axes.set_xlabel("tested on (AI source; real test images in every column)")
    axes.set_ylabel("trained on (with the real images)")
    for (i, j), value in np.ndenumerate(values):
        text = "n/a" if np.isnan(value) else f"{value:.2f}"
        axes.text(j, i, text, ha="center", va="center", color="white" if value < 0.6 else "black")
    figure.colorbar(image, ax=axes, label="AI accuracy")
    axes.set_title(title)
    _save(figure, path)


def reliability_diagram(rows_by_backbone: dict[str, list[dict]], path: Path) -> None:
    """Observed share of real images against mean calibrated score, per backbone, from the rows
    of scikit-learn's calibration_curve as DVCLive writes them (prob_pred, prob_true)."""
    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, rows in rows_by_backbone.items():
        axes.plot(
            [r["prob_pred"] for r in rows],
            [r["prob_true"] for r in rows],
            "o-",
            label=name,
        )
    axes.set_xlabel("mean P(real) in the bin")
    axes.set_ylabel("observed share of real images")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.legend()
    _save(figure, path)


def robustness_curves(grids: dict[str, list[dict]], path: Path) -> None:
    """Accuracy and ROC-AUC against level, one panel per kind of degradation, one line per
    backbone; the unperturbed value as a dotted line."""
    kinds = list(dict.fromkeys(row["kind"] for rows in grids.values() for row in rows))
    kinds = [kind for kind in kinds if kind != "none"]
    figure = Figure(figsize=(3.2 * max(len(kinds), 1), 5.5), layout="constrained")
    axes = figure.subplots(2, max(len(kinds), 1), squeeze=False)
    for column, kind in enumerate(kinds):
        for row, metric in enumerate(("roc_auc", "accuracy")):
            ax = axes[row, column]
            for line, (name, rows) in enumerate(grids.items()):
                points = [r for r in rows if r["kind"] == kind]
                levels = [str(r["level"]) for r in points]
                values = [np.nan if r[metric] is None else r[metric] for r in points]
                ax.plot(levels, values, "o-", color=f"C{line}", label=name)
                clean = next((r[metric] for r in rows if r["kind"] == "none"), None)
                if clean is not None:
                    ax.axhline(clean, color=f"C{line}", linestyle=":", linewidth=1)
            ax.set_ylim(0, 1.02)
            ax.set_title(kind if row == 0 else "")
            ax.set_xlabel("level" if row == 1 else "")
            if column == 0:
                ax.set_ylabel({"roc_auc": "ROC-AUC", "accuracy": "accuracy"}[metric])
    axes[0, 0].legend(fontsize="small")
    _save(figure, path)


def deletion_curves(rows_by_backbone: dict[str, list[dict]], path: Path) -> None:
    """The explanation maps' deletion check: the mean probability of the verdict as the map's
    cells are covered in its order (solid) and in random orders (dotted), one colour per
    backbone, from the rows evaluate logs (covered, map, random)."""
    figure = Figure(figsize=(5, 4))
    axes = figure.subplots()
    for line, (name, rows) in enumerate(rows_by_backbone.items()):
        covered = [row["covered"] for row in rows]
        axes.plot(covered, [row["map"] for row in rows], "o-", color=f"C{line}", label=name)
        axes.plot(covered, [row["random"] for row in rows], ":", color=f"C{line}")
    axes.plot([], [], "k-", label="map's order")
    axes.plot([], [], "k:", label="random order")
    axes.set_xlabel("share of the image covered")
    axes.set_ylabel("mean probability of the model's verdict")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.legend(fontsize="small")
    _save(figure, path)


def blend_curves(
    blends: dict[str, dict[str, Any]],
    directions: dict[str, str],
    band: tuple[float, float],
    path: Path,
) -> None:
    """Mean P(real) of the blend stage's composites against their AI area fraction, one panel
    per direction (`directions`: key and title), one colour per backbone, hard masks solid and
    soft dashed, with their 95 % intervals shaded and each backbone's threshold dotted; `band`,
    the p-scores the app reads as an AI-edited photograph, in grey. From the curves of
    metrics/<backbone>_blend.json."""
    figure = Figure(figsize=(4.2 * len(directions), 4), layout="constrained")
    axes = figure.subplots(1, len(directions), squeeze=False)[0]
    for ax, (direction, title) in zip(axes, directions.items(), strict=True):
        ax.axhspan(
            *band,
            color="grey",
            alpha=0.15,
            label=f"{band[0]:g}-{band[1]:g}: AI-edited, says the app",
        )
        for line, (name, blend) in enumerate(blends.items()):
            for kind, style in (("hard", "o-"), ("soft", "s--")):
                points = blend["curves"][direction][kind]["points"]
                fractions = [point["fraction"] for point in points]
                ax.plot(
                    fractions,
                    [point["p_real"] for point in points],
                    style,
                    color=f"C{line}",
                    markersize=3,
                    label=f"{name}, {kind} mask",
                )
                ax.fill_between(
                    fractions,
                    [point["ci95"][0] for point in points],
                    [point["ci95"][1] for point in points],
                    color=f"C{line}",
                    alpha=0.1,
                )
            ax.axhline(blend["threshold"], color=f"C{line}", linestyle=":", linewidth=1)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("AI area fraction")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("mean P(real) (dotted: threshold)")
    axes[-1].legend(fontsize="x-small")
    _save(figure, path)
