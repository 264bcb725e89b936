"""Where the stages hand their outputs to each other (dvc.yaml declares the same paths).

Named here rather than in the module of the stage that writes them, so that a stage can read
another's outputs without importing that stage and its libraries: the head experiment's stages
start faster, and so do the CLI and the app.
"""

from pathlib import Path

RAW_DIR = Path("data/raw")
# present in RAW_DIR while a crawl has not finished with every source complete
CRAWL_INCOMPLETE = RAW_DIR / ".crawl-incomplete"
SPLITS = Path("data/prepared/splits.csv")
CONFOUNDS = Path("reports/confounds.json")
FEATURES_DIR = Path("data/features")
BALANCED_DIR = Path("data/balanced")
ROBUSTNESS_DIR = Path("data/robustness")
HEADS_DIR = Path("models/heads")
SCORES_DIR = Path("data/scores")
METRICS_DIR = Path("metrics")
