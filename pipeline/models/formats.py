"""Deployment formats of the exported model, and the runtimes that score with them.

Each format is one FORMATS entry: the file it writes into models/export/, how it is written from
the Keras inference model, how a scorer is loaded from it, and whether it is quantised (checked
by verdict agreement and ROC-AUC change) or not (checked score by score). A backbone that a
converter cannot handle raises NotConvertible, which export records in model.json instead of
failing.

TensorFlow and the LiteRT runtime are imported only inside the functions that need them, so that
`aiic predict --runtime litert` and `aiic serve --runtime litert` start without TensorFlow. Every
format is written by TensorFlow's converters from a Keras model on Keras' TensorFlow backend: on
another backend (KERAS_BACKEND) `check_writable` refuses them before any work.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import AiicError
from pipeline.models import backend

Scorer = Callable[[np.ndarray], np.ndarray]  # uint8 or float RGB batch -> P(real) per image
SIGNATURE = "serving_default"
UINT8_SIGNATURE = "serve_uint8"
INPUT_NAME = "rgb"
OUTPUT_NAME = "p_real"


class NotConvertible(AiicError):
    """A converter cannot turn this model into a format; the message says why, briefly."""


@dataclass(frozen=True)
class Format:
    file: str  # in the export folder
    write: Callable[[Any, int, Path], None]  # (Keras model, input size, destination)
    load: Callable[[Path], Scorer]
    quantized: bool
    description: str


def _serving_function(model: Any, input_size: int, dtype: Any) -> Any:
    import tensorflow as tf

    return tf.function(
        lambda images: {OUTPUT_NAME: model(tf.cast(images, tf.float32), training=False)[:, 0]},
        input_signature=[tf.TensorSpec((None, input_size, input_size, 3), dtype, INPUT_NAME)],
    )


def write_saved_model(model: Any, input_size: int, destination: Path) -> None:
    """A SavedModel for TF Serving: serving_default takes float32 pixels (0..255) and returns
    P(real) as `p_real`; serve_uint8 takes uint8 pixels."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, dtype in (("serve", tf.float32), (UINT8_SIGNATURE, tf.uint8)):
        archive.add_endpoint(name, _serving_function(model, input_size, dtype))
    archive.write_out(str(destination), verbose=False)


def load_saved_model(path: Path) -> Scorer:
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures[SIGNATURE]

    def score(images: np.ndarray) -> np.ndarray:
        outputs = signature(**{INPUT_NAME: tf.constant(images, tf.float32)})
        return outputs[OUTPUT_NAME].numpy().astype(np.float64)

    return score


def unsupported_ops(message: str) -> str:
    """The converter's error in one line: the TensorFlow ops LiteRT's builtins lack, when it
    names them (its message is pages of MLIR)."""
    found = re.search(r"TF Select ops: ([^\n]+)", message)
    if found:
        return f"LiteRT's built-in ops lack {found.group(1).strip()} (only TF Select, not shipped)"
    return message.strip().splitlines()[0][:300] if message.strip() else "conversion failed"


def _convert_to_litert(model: Any, input_size: int, destination: Path, quantize: bool) -> None:
    """Converted from a SavedModel, the converter's documented TF2 path: from a Keras 3 model's
    concrete function it loses the weights (every score 1.0)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="aiic-litert-") as saved_model:
        write_saved_model(model, input_size, Path(saved_model))
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, [SIGNATURE])
        if quantize:  # dynamic range: int8 weights, float activations; no calibration set needed
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # the converter raises ConverterError and plain ones alike
            raise NotConvertible(unsupported_ops(str(error))) from error
    destination.write_bytes(flatbuffer)


def write_litert(model: Any, input_size: int, destination: Path) -> None:
    _convert_to_litert(model, input_size, destination, quantize=False)


def write_litert_int8(model: Any, input_size: int, destination: Path) -> None:
    _convert_to_litert(model, input_size, destination, quantize=True)


class LiteRTModel:
    """A .tflite file scored with the LiteRT interpreter (ai-edge-litert): not thread-safe, so
    one caller at a time (the CLI, the server's batching thread)."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise AiicError(
                "The LiteRT runtime is not installed: pip install ai-edge-litert"
            ) from error
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = -1

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.empty(0)
        if len(images) != self.batch:
            shape = [len(images), *self.input["shape_signature"][1:]]
            self.interpreter.resize_tensor_input(self.input["index"], shape)
            self.interpreter.allocate_tensors()
            self.batch = len(images)
        self.interpreter.set_tensor(self.input["index"], images.astype(np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).astype(np.float64).reshape(-1)


FORMATS: dict[str, Format] = {
    "saved_model": Format(
        "saved_model",
        write_saved_model,
        load_saved_model,
        quantized=False,
        description="TensorFlow SavedModel for TF Serving (signature serving_default)",
    ),
    "litert": Format(
        "model.tflite",
        write_litert,
        LiteRTModel,
        quantized=False,
        description="LiteRT (TensorFlow Lite), float32",
    ),
    "litert_int8": Format(
        "model_int8.tflite",
        write_litert_int8,
        LiteRTModel,
        quantized=True,
        description="LiteRT, dynamic-range quantisation (int8 weights, float activations)",
    ),
}

FLOAT_TOLERANCE = 1e-4  # max |delta p| of a float format against evaluate's scores
MIN_VERDICT_AGREEMENT = 0.95  # a quantised format's verdicts against evaluate's
MAX_ROC_AUC_DROP = 0.02


def float_check(p_format: np.ndarray, p_evaluated: np.ndarray) -> dict[str, Any]:
    """{"images", "max_abs_diff", "passed"} of a float format against evaluate's scores."""
    difference = float(np.max(np.abs(p_format - p_evaluated), initial=0.0))
    return {
        "images": len(p_evaluated),
        "max_abs_diff": difference,
        "passed": difference <= FLOAT_TOLERANCE,
    }


def quantized_check(
    p_format: np.ndarray, p_evaluated: np.ndarray, is_real: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Verdict agreement and ROC-AUC change of a quantised format against evaluate's scores (the
    AUC only where both labels occur among the images). One real/AI pair ranked the other way
    round moves the AUC by 1 / (real x AI images), more than MAX_ROC_AUC_DROP on a handful of
    test images: a drop of one such pair is allowed, so that near-tied scores of a small test
    split do not fail an export whose verdicts all agree."""
    from sklearn.metrics import roc_auc_score

    agreement = float(np.mean((p_format >= threshold) == (p_evaluated >= threshold)))
    result: dict[str, Any] = {
        "images": len(p_evaluated),
        "max_abs_diff": float(np.max(np.abs(p_format - p_evaluated), initial=0.0)),
        "verdict_agreement": agreement,
        "roc_auc_change": None,
    }
    allowed_drop = MAX_ROC_AUC_DROP
    if len(set(is_real.tolist())) == 2:
        change = roc_auc_score(is_real, p_format) - roc_auc_score(is_real, p_evaluated)
        result["roc_auc_change"] = float(change)
        pairs = int(is_real.sum()) * int((~is_real.astype(bool)).sum())
        allowed_drop = max(MAX_ROC_AUC_DROP, 1 / pairs)
    result["passed"] = agreement >= MIN_VERDICT_AGREEMENT and (
        result["roc_auc_change"] is None or result["roc_auc_change"] >= -allowed_drop - 1e-12
    )
    return result


def check_writable(names: list[str]) -> None:
    """BackendMismatch, before any work, where Keras runs on a backend that cannot write the
    formats `names`: each is written through TensorFlow, from a model on its backend."""
    for name in names:
        backend.require_tensorflow(f"The {name} export ({FORMATS[name].description})")


def write_and_check(
    name: str,
    model: Any,
    input_size: int,
    folder: Path,
    images: np.ndarray,
    p_evaluated: np.ndarray,
    is_real: np.ndarray,
    threshold: float,
) -> dict[str, Any]:
    """Write one format into `folder`, reload it and compare its scores of `images` with
    `p_evaluated`; the model.json entry, with "passed". A model the converter cannot handle
    gives {"file": None, "not_convertible": why} and no file."""
    check_writable([name])
    form = FORMATS[name]
    try:
        form.write(model, input_size, folder / form.file)
    except NotConvertible as error:
        return {"file": None, "description": form.description, "not_convertible": str(error)}
    p_format = form.load(folder / form.file)(images)
    check = (
        quantized_check(p_format, p_evaluated, is_real, threshold)
        if form.quantized
        else float_check(p_format, p_evaluated)
    )
    return {"file": form.file, "description": form.description, **check}
