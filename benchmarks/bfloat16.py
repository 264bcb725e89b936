"""bfloat16 inference: bfloat16 against float32 backbones (`backbones.<name>.precision`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from benchmarks.common import Context, label_of, run_batches, timed
from pipeline.core.tables import markdown_table

NAME = "bfloat16"


def accepts_bfloat16(spec: dict[str, Any]) -> bool:
    """Whether the backbone's extractor offers bfloat16 (the spectrum computes in float32)."""
    from pipeline.core.errors import ConfigError
    from pipeline.models.backbones import Backbone

    try:
        Backbone.from_spec({**spec, "precision": "bfloat16"})
    except ConfigError:
        return False
    return True


def measure(context: Context) -> dict[str, Any]:
    """Forward throughput of both precisions, how far the features move, and what a head
    trained on float32 features says on the bfloat16 ones, for every backbone that offers it."""
    import keras
    from sklearn.metrics import roc_auc_score

    from pipeline.data.images import LABELS, load_for_model
    from pipeline.models.backbones import Backbone, build_extractor
    from pipeline.models.calibrate import uncalibrated
    from pipeline.models.head import head_logits
    from pipeline.models.runtime import compiled
    from pipeline.stages.train import train_head

    count = max(16, len(context.paths) // 2)
    order = np.random.default_rng(0).permutation(len(context.paths))[:count]  # both halves
    chosen = [context.paths[i] for i in order]
    labels = np.array([LABELS.index(label_of(p)) for p in chosen])
    half = len(chosen) // 2
    test = labels[half:]
    both = len(np.unique(test)) == 2
    results = {}
    for name, spec in context.backbones.items():
        if not accepts_bfloat16(spec):
            continue
        backbone = Backbone.from_spec(spec)
        size, batch = backbone.input_size, backbone.batch_size
        arrays = np.stack([load_for_model(p, size, backbone.input_mode) for p in chosen])
        features, seconds = {}, {}
        for precision in ("float32", "bfloat16"):
            keras.utils.set_random_seed(0)
            # both precisions were checked: accepts_bfloat16 above
            forward = compiled(build_extractor(dataclasses.replace(backbone, precision=precision)))
            forward(arrays[:batch])
            seconds[precision], features[precision] = timed(run_batches, forward, arrays, batch)
        full, mixed = features["float32"], features["bfloat16"]
        norms = np.linalg.norm(full, axis=1) * np.linalg.norm(mixed, axis=1)
        cosine = (full * mixed).sum(1) / norms
        train = (full[:half], labels[:half])
        classifier = train_head(train, train, context.head(), context.params["seed"])
        p_full, p_mixed = (uncalibrated(head_logits(classifier, f[half:])) for f in (full, mixed))
        results[name] = {
            "images": len(chosen),
            "input_size": size,
            "speedup": round(seconds["float32"] / seconds["bfloat16"], 2),
            "min_cosine": round(float(cosine.min()), 6),
            "max_score_change": round(float(np.abs(p_full - p_mixed).max()), 4),
            "verdicts_changed": int(((p_full >= 0.5) != (p_mixed >= 0.5)).sum()),
            "test_images": len(chosen) - half,
            "roc_auc_float32": round(roc_auc_score(test, p_full), 4) if both else None,
            "roc_auc_bfloat16": round(roc_auc_score(test, p_mixed), 4) if both else None,
        }
    return results


def render(result: dict[str, Any]) -> list[str]:
    header = ["backbone", "images", "bfloat16 speed-up", "min cosine to float32 features"]
    header += ["largest P(real) change", "verdicts changed", "ROC-AUC float32 → bfloat16"]
    rows = [
        [
            name,
            r["images"],
            f"**{r['speedup']}x**",
            r["min_cosine"],
            r["max_score_change"],
            f"{r['verdicts_changed']} of {r['test_images']}",
            f"{r['roc_auc_float32']} → {r['roc_auc_bfloat16']}",
        ]
        for name, r in result.items()
    ]
    return [
        "## bfloat16 inference (an option, `backbones.<name>.precision`)",
        markdown_table(header, rows),
        "Forward passes on the same decoded images; the head was trained on float32 features of "
        "the first half and scores the second half from each. These are random-init backbones: "
        "with ImageNet weights the activations differ, so float32 stays the default until the "
        "same comparison is run with the real weights.",
    ]
