"""The settings with a fixed vocabulary, named once and TensorFlow-free: params.yaml's schema
(pipeline.stages.params) checks them before any work, and the code that dispatches on them
names them in its own errors."""

BALANCE_METHODS = ("smote", "class_weight", "none")  # pipeline.data.oversample
CALIBRATION_METHODS = ("temperature", "platt", "isotonic", "none")  # pipeline.models.calibrate
THRESHOLD_RULES = ("balanced_accuracy", "fpr_real")  # pipeline.models.calibrate
ENGINES = ("local", "ray")  # where backbones run over images: pipeline.models.engines
BLEND_ENCODINGS = ("png", "jpeg")  # how the blend stage re-encodes every composite
