"""Stage `compare`: reports/comparison.md, every backbone side by side, and
reports/evaluation.md, how each behaves, with figures.

comparison.md: discrimination with 95 % intervals, calibration before and after, robustness to
perturbations, results per source, the confound check, and which backbone is exported and why.
evaluation.md (figures in reports/evaluation/, drawn with matplotlib so that GitHub shows them):
per backbone the headline metrics with intervals, real and AI accuracy, the reliability diagram,
the robustness curves, the cross-generator matrix and its heatmap, the explanation maps' deletion
check and a gallery of maps (the explain stage's, copied beside the report), the blend curves
(P(real) of partly AI-made composites against their AI area fraction, and whether the maps find
the AI region), and the confound warning when it applies.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from pipeline.core.entry import run
from pipeline.core.figures import (
    blend_curves,
    deletion_curves,
    draw_crossgen_heatmap,
    reliability_diagram,
    robustness_curves,
)
from pipeline.core.io import atomic_path, read_json
from pipeline.core.paths import (
    BLEND_DIRECTIONS,
    BLEND_MASKS,
    COMPARISON_REPORT,
    CONFOUNDS,
    DELETION_PLOT,
    EVAL_DIR,
    EVALUATION_FIGURES_DIR,
    EVALUATION_REPORT,
    GALLERY_FILE,
    GALLERY_KINDS,
    crossgen_file,
    explanations_dir,
    metrics_file,
    plot_file,
)
from pipeline.core.tables import markdown_table
from pipeline.models.metrics import (
    ALL_AI_SOURCES,
    CONFOUND_WARNING_AUC,
    EDITED_BAND,
    MASK_CELL,
    NEGLIGIBLE_AREA,
    SMALL_EDIT,
    UNTOUCHED_ABOVE,
    plot_rows,
)
from pipeline.models.occlusion import Occlusion
from pipeline.stages.params import load_params


def with_interval(metrics: dict[str, Any], name: str) -> str:
    value, interval = metrics.get(name), metrics.get("ci95", {}).get(name)
    if value is None:
        return "n/a"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else f"{value:.3f}"


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def metrics_table(results: dict[str, dict[str, Any]]) -> str:
    """Test metrics per backbone (or per run), with bootstrap 95 % intervals."""
    columns = ("accuracy", "balanced_accuracy", "real_accuracy", "ai_accuracy", "roc_auc")
    columns += ("average_precision", "ece", "brier")
    return markdown_table(
        [
            "backbone",
            "test images",
            "accuracy",
            "balanced accuracy",
            "real accuracy",
            "AI accuracy",
            "ROC-AUC",
            "AP",
            "ECE",
            "Brier",
            "threshold",
        ],
        [
            [
                name,
                str(m["images"]),
                *(with_interval(m, c) for c in columns),
                number(m["threshold"]),
            ]
            for name, m in results.items()
        ],
    )


def calibration_table(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, m in results.items():
        before, after = m["calibration"]["before"], m["calibration"]["after"]
        rows.append(
            [name, m["calibration"]["method"]]
            + [f"{before[key]:.3f} → {after[key]:.3f}" for key in ("ece", "brier", "log_loss")]
        )
    return markdown_table(["backbone", "calibration", "ECE", "Brier", "log-loss"], rows)


def robustness_table(robustness: dict[str, dict[str, Any]]) -> str:
    names = list(robustness)
    perturbations = list(next(iter(robustness.values()))) if robustness else []

    def cell(values: dict[str, Any]) -> str:
        if values["accuracy"] is None:
            return f"n/a ({values['skipped']} skipped)"
        return " / ".join(
            number(values.get(key))
            for key in ("accuracy", "real_accuracy", "ai_accuracy", "roc_auc")
        )

    return markdown_table(
        ["perturbation", *(f"{n} acc. / real / AI / AUC" for n in names)],
        [[p, *(cell(robustness[n][p]) for n in names)] for p in perturbations],
    )


def breakdown_table(results: dict[str, dict[str, Any]], column: str) -> str:
    groups = sorted({g for m in results.values() for g in m["breakdown"][column]})
    rows = []
    for group in groups:
        cells = []
        for m in results.values():
            values = m["breakdown"][column].get(group)
            cells.append(
                ""
                if values is None
                else f"{number(values['accuracy'])} / {number(values.get('real_accuracy'))} / "
                f"{number(values.get('ai_accuracy'))} / {number(values.get('roc_auc'))} "
                f"(n={values['images']})"
            )
        rows.append([group, *cells])
    return markdown_table([column, *(f"{n} acc. / real / AI / AUC" for n in results)], rows)


def report(
    results: dict[str, dict[str, Any]],
    robustness: dict[str, dict[str, Any]],
    exported: str,
    confounds: dict[str, Any] | None,
) -> str:
    best = max(results, key=lambda n: results[n]["roc_auc"] or 0)
    why = (
        "it also has the best test ROC-AUC"
        if best == exported
        else f"`{best}` has the best test ROC-AUC; `dvc exp run -S backbone={best}` exports it"
    )
    parts = [
        "# Backbone comparison",
        "Regenerated by `dvc repro` (stage `compare`) from `metrics/`. Intervals are 95 % "
        "percentile bootstrap intervals over the test split; scores are calibrated on the "
        "validation split and the threshold is chosen there too.",
        f"**Exported: `{exported}`**, the Hydra `backbone` choice; {why}.",
        "## Test metrics",
        metrics_table(results),
        "## Calibration (test split, before → after)",
        calibration_table(results),
        "## Robustness (accuracy / real accuracy / AI accuracy / ROC-AUC on perturbed test images)",
        robustness_table(robustness),
    ]
    for column, title in (("source_name", "source"), ("format", "format"), ("size_band", "size")):
        parts += [f"## Per {title}", breakdown_table(results, column)]
    if confounds:
        parts += [
            "## Confound check",
            f"Trivial cues alone (format, JPEG quality, EXIF, size) reach test ROC-AUC "
            f"{confounds['all_cues']['roc_auc']} (0.5 = no signal); per cue: "
            + ", ".join(f"{cue} {auc}" for cue, auc in confounds["per_cue"].items())
            + ".",
        ]
    return "\n\n".join(parts) + "\n"


def crossgen_table(matrix: dict[str, Any]) -> str:
    """AI accuracy [95 % interval] per trained-on row and tested-on column, with the row head's
    real accuracy, and the leave-one-source-out row."""
    sources = matrix["ai_sources"]

    def ai_cell(values: dict[str, Any]) -> str:
        if "not_applicable" in values:
            return "n/a"
        return f"{with_interval(values, 'ai_accuracy')} (AUC {number(values['roc_auc'])})"

    rows = []
    for trained in sources:
        tested = matrix["trained_on"][trained]["tested_on"]
        everything = tested[ALL_AI_SOURCES]
        real = (
            "n/a" if "not_applicable" in everything else with_interval(everything, "real_accuracy")
        )
        rows.append([trained, *(ai_cell(tested[s]) for s in sources), real])
    rows.append(["all but the column", *(ai_cell(matrix["leave_one_out"][s]) for s in sources), ""])
    return markdown_table(["trained on ↓ tested on →", *sources, "real accuracy"], rows)


def faithfulness_table(maps: dict[str, dict[str, Any]]) -> str:
    """The deletion check per backbone: areas under the deletion curve with their intervals,
    and how far covering the whole image moves the verdict's probability."""
    return markdown_table(
        [
            "backbone",
            "test images",
            "area, map's order",
            "area, random order",
            "random − map",
            "drop, all covered",
            "verdict",
        ],
        [
            [
                name,
                str(m["images"]),
                *(with_interval(m, key) for key in ("map_auc", "random_auc", "difference")),
                number(m["full_cover_drop"]),
                f"**{m['verdict']}**",
            ]
            for name, m in maps.items()
        ],
    )


def blend_table(blends: dict[str, dict[str, Any]]) -> str:
    """Mean P(real) [95 % interval] per AI area fraction, Spearman's rho and where the verdict
    flips, per backbone, direction and mask."""
    first = next(iter(blends.values()))["curves"]["ai_in_real"]["hard"]["points"]
    rows = []
    for name, blend in blends.items():
        for direction in BLEND_DIRECTIONS:
            for kind in BLEND_MASKS:
                curve = blend["curves"][direction][kind]
                rows.append(
                    [
                        name,
                        direction.replace("_", " "),
                        kind,
                        *(
                            f"{p['p_real']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}]"
                            for p in curve["points"]
                        ),
                        number(curve["spearman_rho"]),
                        curve["flip"],
                    ]
                )
    fractions = [f"{point['fraction']:g}" for point in first]
    return markdown_table(["backbone", "pasted", "mask", *fractions, "ρ", "verdict flips"], rows)


def share_cell(measured: dict[str, Any]) -> str:
    if not measured["composites"]:
        return "n/a"
    low, high = measured["ci95"]
    return f"{measured['share']:.2f} [{low:.2f}, {high:.2f}] (n={measured['composites']})"


def promise_table(blends: dict[str, dict[str, Any]]) -> str:
    """The app's promise per backbone: untouched photographs above UNTOUCHED_ABOVE, AI-edited
    ones (at most SMALL_EDIT of the area AI-made) within EDITED_BAND."""
    low, high = EDITED_BAND
    return markdown_table(
        [
            "backbone",
            f"untouched photographs above {UNTOUCHED_ABOVE:g}",
            "their mean P(real)",
            f"AI-edited photographs within {low:g}–{high:g}",
            "their mean P(real)",
        ],
        [
            [
                name,
                share_cell(b["promise"]["untouched_over"]),
                number(b["promise"]["untouched_mean_p_real"]),
                share_cell(b["promise"]["edited_in_band"]),
                number(b["promise"]["edited_mean_p_real"]),
            ]
            for name, b in blends.items()
        ],
    )


def localisation_table(blends: dict[str, dict[str, Any]]) -> str:
    """Whether the maps find the AI region, per backbone and direction: the pointing game and
    the IoU of the most-AI cells, each against random maps."""
    rows = []
    for name, blend in blends.items():
        for direction in ("all", *BLEND_DIRECTIONS):
            found = blend["maps"][direction]
            if not found["composites"]:
                rows.append([name, direction.replace("_", " "), "0", "", "", "", "", "n/a"])
                continue
            rows.append(
                [
                    name,
                    direction.replace("_", " "),
                    str(found["composites"]),
                    *(
                        with_interval(found, key)
                        for key in ("pointing_game", "pointing_game_random", "iou", "iou_random")
                    ),
                    f"**{found['verdict']}** (IoU: {found['iou_verdict']})",
                ]
            )
    return markdown_table(
        [
            "backbone",
            "pasted",
            "composites",
            "pointing game, map",
            "pointing game, random",
            "IoU, map",
            "IoU, random",
            "verdict",
        ],
        rows,
    )


def blend_section(blends: dict[str, dict[str, Any]], figure: str) -> list[str]:
    """The blend stage's findings: the curves, the app's promise, the maps' localisation."""
    low, high = EDITED_BAND
    return [
        "## Blends: partly AI-made images",
        "Composites of a real and an AI test image (stage `blend`): a rectangle of one pasted "
        "into the other, hard-edged and feathered, at seeded positions, every composite "
        "re-encoded alike (`blend.encode`), its two ends included. Mean P(real) [95 % interval] "
        "by AI area fraction, in both directions; ρ: Spearman's rank correlation of the exact AI "
        "fraction with P(real) over every composite; the verdict flips where the mean P(real) "
        f"first falls under the backbone's threshold (dotted). Grey: {low:g}–{high:g}, what the "
        "app reads as a photograph edited with AI features.",
        f"![blend curves]({figure})",
        blend_table(blends),
        f"The app's promise: untouched photographs (AI fraction 0) score above "
        f"{UNTOUCHED_ABOVE:g}, photographs with an AI region (at most {SMALL_EDIT:g} of the area, "
        f"either mask) {low:g}–{high:g}. Share of the composites that do so [95 % interval]:",
        promise_table(blends),
        "Do the explanation maps find the AI region? The pointing game: the map's most-AI cell "
        f"is a cell the AI region covers at least {MASK_CELL:g}; IoU: of the map's k most-AI "
        "cells with the k AI cells; each against random maps (seeded permutations of the same "
        "map), over the mapped composites (`blend.maps` per fraction, direction and mask).",
        localisation_table(blends),
    ]


def gallery_section(name: str, gallery: list[dict[str, str]], maps: dict[str, Any]) -> list[str]:
    """One backbone's gallery (rows of gallery.csv, `figure` relative to the report) as a table
    of its maps per kind, and what its deletion check found."""
    parts = ["### Where the model looks"]
    by_kind = {kind: [row for row in gallery if row["kind"] == kind] for kind in GALLERY_KINDS}
    cells = [
        "<br>".join(
            f"![{GALLERY_KINDS[kind]} of {name}]({row['figure']})<br>{row['label']} image, "
            f"p-score {float(row['p_real']):.3f}"
            for row in rows
        )
        or "none in the test split"
        for kind, rows in by_kind.items()
    ]
    parts.append(markdown_table(list(GALLERY_KINDS.values()), [cells]))
    if maps["better_than_random"]:
        finding = (
            "covering the regions in the maps' order lowers the probability of the verdict "
            "faster than covering them in a random order"
        )
    else:
        finding = (
            f"the maps of this backbone are **{maps['verdict']}** at finding the regions that "
            "move its score: do not read them as showing what the model relies on"
        )
    parts.append(
        f"Deletion check on {maps['images']} test images: {finding} (area under the deletion "
        f"curve {with_interval(maps, 'map_auc')} against {with_interval(maps, 'random_auc')})."
    )
    return parts


def evaluation_report(
    results: dict[str, dict[str, Any]],
    robustness: dict[str, dict[str, Any]],
    matrices: dict[str, dict[str, Any]],
    figures: dict[str, str],
    random_init: list[str],
    confounds: dict[str, Any] | None,
    maps: dict[str, dict[str, Any]],
    galleries: dict[str, list[dict[str, str]]],
    meaning: str,
    blends: dict[str, dict[str, Any]],
) -> str:
    """reports/evaluation.md; `figures` maps a figure's key to its path relative to the report,
    `maps` holds each backbone's deletion check (metrics/<b>_faithfulness.json), `galleries` its
    gallery rows with their figures, `meaning` what a map says, `blends` its blend metrics
    (metrics/<b>_blend.json)."""
    parts = [
        "# Evaluation",
        "Regenerated by `dvc repro` (stage `compare`). Real accuracy and AI accuracy are the "
        "recall of each class at the chosen threshold; intervals are 95 % percentile bootstrap "
        "intervals over the test split.",
    ]
    if random_init:
        parts.append(
            "**Random-init backbones** (`weights: null`): "
            + ", ".join(f"`{name}`" for name in random_init)
            + ". Their features are random projections, not ImageNet features; read their "
            "numbers as a lower bound, not as the detector's quality."
        )
    auc = (confounds or {}).get("all_cues", {}).get("roc_auc")
    if auc is not None and auc >= CONFOUND_WARNING_AUC:
        parts.append(
            f"> **Confound warning**: trivial cues alone (format, JPEG quality, EXIF, size) "
            f"separate the classes with test ROC-AUC {auc:.2f}; the model may be learning them, "
            "not the images. See the same-format re-encode level of the robustness grid."
        )
    parts += ["## Headline metrics (test split)", metrics_table(results)]
    parts += [
        "## Robustness",
        "Accuracy and ROC-AUC of the test images under each level of the `robustness` grid "
        "(dotted: unperturbed).",
        f"![robustness curves]({figures['robustness']})",
        robustness_table(robustness),
        "## Explanation maps and their faithfulness",
        f"Occlusion maps (pipeline.models.occlusion). {meaning} The deletion check covers the "
        "cells of a map one after another, those that support the model's verdict most first, and "
        "follows the probability of that verdict: the smaller the area under that curve, against "
        "covering the cells in a random order, the better the map ranks the regions that move the "
        "score; differences under "
        f"{NEGLIGIBLE_AREA} count as none. *Drop, all "
        "covered*: how far the verdict's probability falls with every cell covered; where it "
        "hardly falls, the model does not react to the covering and no map can rank the regions. "
        "The map is made by covering cells the same way, which favours it: the check can show a "
        "map no better than chance, not that a map is right.",
        f"![deletion curves]({figures['deletion']})",
        faithfulness_table(maps),
        *blend_section(blends, figures["blend"]),
    ]
    for name in results:
        parts += [f"## `{name}`", f"![reliability of {name}]({figures['reliability_' + name]})"]
        parts += gallery_section(name, galleries[name], maps[name])
        matrix = matrices.get(name)
        if matrix is None:
            continue
        if matrix["applicable"]:
            parts += [
                "Cross-generator matrix: AI accuracy [95 % interval] (ROC-AUC) of a head trained "
                "on the real images and one AI source (rows), tested on the real test images and "
                "each AI source (columns).",
                f"![cross-generator heatmap of {name}]({figures['crossgen_' + name]})",
                crossgen_table(matrix),
            ]
        else:
            parts.append(f"Cross-generator matrix: not applicable ({matrix['reason']}).")
    return "\n\n".join(parts) + "\n"


def draw_figures(
    names: list[str],
    robustness_rows: dict[str, list[dict]],
    reliability: dict[str, dict[str, list[dict]]],
    matrices: dict[str, dict[str, Any]],
    deletion_rows: dict[str, list[dict]],
    blends: dict[str, dict[str, Any]],
    folder: Path,
) -> dict[str, str]:
    """The report's PNGs in `folder`; their paths relative to the report."""
    relative = EVALUATION_FIGURES_DIR.relative_to(EVALUATION_REPORT.parent)
    figures = {"robustness": "robustness.png", "deletion": "deletion.png", "blend": "blend.png"}
    robustness_curves(robustness_rows, folder / figures["robustness"])
    deletion_curves(deletion_rows, folder / figures["deletion"])
    blend_curves(blends, BLEND_DIRECTIONS, EDITED_BAND, folder / figures["blend"])
    for name in names:
        figures[f"reliability_{name}"] = f"reliability_{name}.png"
        reliability_diagram(reliability[name], folder / figures[f"reliability_{name}"])
        if matrices.get(name, {}).get("applicable"):
            figures[f"crossgen_{name}"] = f"crossgen_{name}.png"
            draw_crossgen_heatmap(
                matrices[name], folder / figures[f"crossgen_{name}"], f"{name}: AI accuracy"
            )
    return {key: str(relative / file) for key, file in figures.items()}


def copy_gallery(name: str, source: Path, folder: Path) -> list[dict[str, str]]:
    """The explain stage's gallery of backbone `name` (its folder `source`), copied into
    `folder`/gallery/<name>/: the rows of its gallery.csv, each with `figure`, its path relative
    to the report."""
    relative = EVALUATION_FIGURES_DIR.relative_to(EVALUATION_REPORT.parent)
    with open(source / GALLERY_FILE, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    target = Path("gallery") / name
    (folder / target).mkdir(parents=True)
    for row in rows:
        shutil.copyfile(source / row["file"], folder / target / Path(row["file"]).name)
        row["figure"] = str(relative / target / Path(row["file"]).name)
    return rows


def main() -> None:
    params = load_params()
    names = list(params["backbones"])
    results = {name: read_json(metrics_file(name)) for name in names}
    robustness = {name: read_json(metrics_file(name, "robustness")) for name in names}
    confounds = read_json(CONFOUNDS) if CONFOUNDS.is_file() else None
    with atomic_path(COMPARISON_REPORT) as tmp:
        tmp.write_text(report(results, robustness, params["backbone"]["name"], confounds))
    print(f"compare: wrote {COMPARISON_REPORT}")
    matrices = {n: read_json(crossgen_file(n)) for n in names if crossgen_file(n).is_file()}
    reliability = {
        name: {
            kind: plot_rows(plot_file(EVAL_DIR, f"reliability_{kind}", name))
            for kind in ("uncalibrated", "calibrated")
        }
        for name in names
    }
    grids = {name: plot_rows(plot_file(EVAL_DIR, "robustness", name)) for name in names}
    deletion = {name: plot_rows(plot_file(EVAL_DIR, DELETION_PLOT, name)) for name in names}
    maps = {name: read_json(metrics_file(name, "faithfulness")) for name in names}
    blends = {name: read_json(metrics_file(name, "blend")) for name in names}
    random_init = [name for name in names if params["backbones"][name].get("weights") is None]
    meaning = Occlusion.from_settings(params["explain"]).meaning
    with atomic_path(EVALUATION_FIGURES_DIR) as folder, atomic_path(EVALUATION_REPORT) as tmp:
        folder.mkdir()
        figures = draw_figures(names, grids, reliability, matrices, deletion, blends, folder)
        galleries = {name: copy_gallery(name, explanations_dir(name), folder) for name in names}
        text = evaluation_report(
            results,
            robustness,
            matrices,
            figures,
            random_init,
            confounds,
            maps,
            galleries,
            meaning,
            blends,
        )
        tmp.write_text(text)
    print(f"compare: wrote {EVALUATION_REPORT} and its figures in {EVALUATION_FIGURES_DIR}")


if __name__ == "__main__":
    run(main, "compare")
