"""Every file the stages hand to each other, named once: the code reads these names, and
tests/test_paths.py checks that dvc.yaml's deps and outs name the same files.

Named here rather than in the module of the stage that writes them, so that a stage can read
another's outputs without importing that stage and its libraries.
"""

from pathlib import Path

RAW_DIR = Path("data/raw")  # images/<sha256>.<ext> and the manifest, written by Scrapy
MANIFEST_FILE = "manifest.csv"
MANIFEST = RAW_DIR / MANIFEST_FILE
SCRAPE_REPORT = Path("reports/scrape.json")
# present in RAW_DIR while a crawl has not finished with every source complete
CRAWL_INCOMPLETE = RAW_DIR / ".crawl-incomplete"
SPLITS = Path("data/prepared/splits.csv")
NORMALIZED_DIR = SPLITS.parent / "images"  # with data.normalize: the re-encoded images
PREPARE_REPORT = Path("reports/prepare.json")
DATASET_CARD = Path("reports/dataset.md")
CONFOUNDS = Path("reports/confounds.json")

FEATURES_DIR = Path("data/features")  # <backbone>/: the three files below
FEATURES_FILE = "features.npy"  # float32, one row per row of splits.csv
INDEX_FILE = "index.csv"  # id, label, split, ok, reason
BACKBONE_WEIGHTS_FILE = "backbone.weights.h5"  # the exact extractor the features came from
AUGMENTED_FILE = "augmented.npz"  # ids, labels, features of augmented training copies (if any)
# A trained backbone's features by the networks trained for the cross-generator matrix, one per
# set of AI sources: <i>.npy in this subfolder, and the sets in CROSSGEN_SETS_FILE
CROSSGEN_FEATURES = "crossgen"
CROSSGEN_SETS_FILE = "crossgen.json"

# The features stage's record of how each backbone was trained: <backbone>/metrics.json and,
# for a trained one, DVCLive's curves in <backbone>/plots/metrics/<training>/{train,eval}/
NETWORKS_DIR = Path("models/networks")
NETWORK_RECORD_FILE = "metrics.json"  # DVCLive's summary, with the training's record in it
# Where a training keeps its checkpoint until the stage has finished (git- and DVC-ignored)
CHECKPOINTS_DIR = Path("models/checkpoints")

BALANCED_DIR = Path("data/balanced")  # <backbone>/train.npz
BALANCED_FILE = "train.npz"
CLASS_WEIGHT_KEY = "class_weight"  # in train.npz with balance.method class_weight: per class id
BALANCE_REPORTS_DIR = Path("reports/balance")  # <backbone>.json

ROBUSTNESS_DIR = Path("data/robustness")  # <backbone>/features.npz
ROBUSTNESS_FILE = "features.npz"

HEADS_DIR = Path("models/heads")  # <backbone>/: the three files below
HEAD_WEIGHTS_FILE = "head.weights.h5"
CALIBRATION_FILE = "calibration.json"
# DVCLive's folder of the training curves: plots/metrics/<backbone>/{train,eval}/<metric>.tsv
HISTORY_DIR = HEADS_DIR / "history"

SCORES_DIR = Path("data/scores")  # <backbone>.csv
METRICS_DIR = Path("metrics")  # <backbone>.json, <backbone>_robustness.json
EVAL_DIR = Path("eval")  # DVCLive's folder of the evaluation plots: see plot_file()
COMPARISON_REPORT = Path("reports/comparison.md")
EVALUATION_REPORT = Path("reports/evaluation.md")
EVALUATION_FIGURES_DIR = Path("reports/evaluation")  # the report's PNG figures

CROSSGEN_DIR = Path("crossgen")  # <backbone>.json: the cross-generator matrix
CROSSGEN_HEATMAP_DIR = CROSSGEN_DIR / "heatmap"  # <backbone>.png (dvc.yaml: an image plot)

EXPLANATIONS_DIR = Path("data/explanations")  # <backbone>/: the files below
GALLERY_FILE = "gallery.csv"  # kind, rank, id, label, p_real, file of each gallery image
GALLERY_KINDS = {  # gallery.csv's kinds, and how the report heads them
    "most_confident_real": "most confident real",
    "most_confident_ai": "most confident AI",
    "worst_misclassified": "worst misclassified",
}
GALLERY_DIR = "gallery"  # the gallery's overlay PNGs
DELETION_FILE = "deletion.npz"  # the deletion check's curves (pipeline.stages.explain)

BLENDS_DIR = Path("data/blends")  # <backbone>/: the files below (pipeline.stages.blend)
COMPOSITES_FILE = "composites.csv"  # each composite: its pair, its mask's rectangle, its P(real)
BLEND_MAPS_FILE = "maps.npz"  # maps of some composites, and how much of each cell is AI-made
BLEND_DIRECTIONS = {  # composites.csv's directions: what is pasted into what, and in words
    "ai_in_real": "an AI region in a real photograph",
    "real_in_ai": "a real region in an AI image",
}
BLEND_MASKS = ("hard", "soft")  # a rectangle, and the same rectangle feathered

EXPORT_DIR = Path("models/export")
MODEL_FILE = "model.keras"
INFO_FILE = "model.json"


def features_dir(backbone: str) -> Path:
    return FEATURES_DIR / backbone


def network_dir(backbone: str) -> Path:
    return NETWORKS_DIR / backbone


def balanced_file(backbone: str) -> Path:
    return BALANCED_DIR / backbone / BALANCED_FILE


def robustness_file(backbone: str) -> Path:
    return ROBUSTNESS_DIR / backbone / ROBUSTNESS_FILE


def scores_file(backbone: str) -> Path:
    return SCORES_DIR / f"{backbone}.csv"


def metrics_file(backbone: str, kind: str = "") -> Path:
    """metrics/<backbone>.json, or metrics/<backbone>_<kind>.json."""
    return METRICS_DIR / f"{backbone}{'_' + kind if kind else ''}.json"


# Where DVCLive's Live puts what it logs, under its folder (dvclive.plots: each kind's subfolder)
SKLEARN_PLOTS = Path("plots/sklearn")  # Live.log_sklearn_plot
CUSTOM_PLOTS = Path("plots/custom")  # Live.log_plot
METRIC_PLOTS = Path("plots/metrics")  # Live.log_metric
SKLEARN_PLOT_KINDS = (
    "roc",
    "precision_recall",
    "confusion_matrix",
    "reliability_uncalibrated",
    "reliability_calibrated",
)
CUSTOM_PLOT_KINDS = ("robustness", "robustness_auc")  # one grid, by accuracy and by ROC-AUC
DELETION_PLOT = "deletion"  # the explanation maps' mean deletion curves, against random orders
BLEND_PLOT = "blend"  # mean P(real) of the composites against their AI area fraction


def plot_name(plot: str, backbone: str) -> str:
    """The name evaluate logs a plot under: one folder per kind of plot, one file per backbone,
    so that dvc.yaml declares each kind once (a folder) for every backbone."""
    return f"{plot}/{backbone}"


def plot_file(eval_dir: Path, plot: str, backbone: str) -> Path:
    """Where DVCLive writes evaluate's plot `plot` of `backbone`, in its folder `eval_dir`."""
    kind = SKLEARN_PLOTS if plot in SKLEARN_PLOT_KINDS else CUSTOM_PLOTS
    return eval_dir / kind / f"{plot_name(plot, backbone)}.json"


def curves_folder(history_dir: Path) -> Path:
    """DVCLive's folder of the training curves in its Live folder `history_dir`."""
    return history_dir / METRIC_PLOTS


def explanations_dir(backbone: str) -> Path:
    return EXPLANATIONS_DIR / backbone


def blends_dir(backbone: str) -> Path:
    return BLENDS_DIR / backbone


def crossgen_file(backbone: str) -> Path:
    return CROSSGEN_DIR / f"{backbone}.json"


def crossgen_heatmap(backbone: str) -> Path:
    return CROSSGEN_HEATMAP_DIR / f"{backbone}.png"
