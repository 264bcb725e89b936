"""What depends on the Keras backend (KERAS_BACKEND: tensorflow, the default; jax; torch), in one
place: a model's fast forward pass, the accelerators the backend sees, deterministic training, and
how a process shares a machine's cores and GPU memory. Stages, the CLI and the app call these and
never a backend's own API, so that they run unchanged on all three; what only TensorFlow has (the
SavedModel and LiteRT exports) calls `require_tensorflow`, which says so.

Each backend's own module is imported only inside the function that needs it, so that importing
this module imports no backend.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.core.errors import BackendMismatch

TENSORFLOW, JAX, TORCH = BACKENDS = ("tensorflow", "jax", "torch")
# in XLA_FLAGS before JAX starts: its GPU kernels deterministic (its CPU ones always are)
JAX_DETERMINISM_FLAG = "--xla_gpu_deterministic_ops=true"

Forward = Callable[[np.ndarray], np.ndarray]


def name() -> str:
    """The backend Keras runs on in this process."""
    import keras

    return keras.backend.backend()


def require_tensorflow(what: str) -> None:
    """BackendMismatch, naming `what`, unless Keras runs on TensorFlow."""
    running = name()
    if running != TENSORFLOW:
        raise BackendMismatch(
            f"{what} needs Keras' TensorFlow backend, but this process runs Keras on {running} "
            f"(KERAS_BACKEND={os.environ.get('KERAS_BACKEND', running)}). Run it with "
            "KERAS_BACKEND=tensorflow (TensorFlow is a dependency of the project), or leave it "
            "out; model.keras works on every backend."
        )


def gpus() -> list[str]:
    """The GPUs the backend sees. Each backend places a model on the first of them by itself, so
    no stage has a code path of its own for a GPU; with none, it runs on the CPU."""
    backend = name()
    if backend == JAX:
        import jax

        return [str(device) for device in jax.devices() if device.platform != "cpu"]
    if backend == TORCH:
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    import tensorflow as tf

    return [device.name for device in tf.config.list_physical_devices("GPU")]


_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forward_pass(model: Any) -> Forward:
    """The Keras model's forward pass in inference mode, NumPy batch in, NumPy outputs out, with
    no per-batch overhead of `predict()`; one per model, so that repeated calls (the app, a warm
    CLI, a server) reuse its compiled program. TensorFlow: one traced graph for any batch size.
    JAX: the model's stateless call under jax.jit, reading the current weights at each call.
    PyTorch: eager under torch.no_grad(), as Keras' own predict step runs."""
    if model not in _FORWARDS:
        backend = name()
        build = {TENSORFLOW: _tensorflow_forward, JAX: _jax_forward, TORCH: _torch_forward}
        _FORWARDS[model] = build[backend](model)
    return _FORWARDS[model]


def _tensorflow_forward(model: Any) -> Forward:
    """Traced once, at the first call, for any number of images of that call's size and type, so
    that a run's last, smaller batch (and a serving micro-batch of any size) reuses the trace."""
    import tensorflow as tf

    graph = tf.function(lambda images: model(images, training=False), reduce_retracing=True)

    def forward(images: np.ndarray) -> np.ndarray:
        if not graph.experimental_get_tracing_count():
            graph.get_concrete_function(tf.TensorSpec((None, *images.shape[1:]), images.dtype))
        return graph(images).numpy()

    return forward


def padded_size(count: int, compiled: list[int]) -> int:
    """The batch size a JAX forward pass runs `count` images at: the smallest size it has compiled
    that holds them; else `count` itself for its first batch (a stage's every batch then fits,
    its last one padded), and the next power of two after that, so that a server's micro-batches
    of every size from 1 to N compile at most about log2(N) programs."""
    fitting = [size for size in compiled if size >= count]
    if fitting:
        return min(fitting)
    if not compiled:
        return count
    return 1 << (count - 1).bit_length()


def _jax_forward(model: Any) -> Forward:
    import jax

    @jax.jit
    def run(trainable: list, non_trainable: list, images: Any) -> Any:
        outputs, _ = model.stateless_call(trainable, non_trainable, images, training=False)
        return outputs

    compiled: list[int] = []

    def forward(images: np.ndarray) -> np.ndarray:
        count = len(images)
        size = padded_size(count, compiled)
        if size not in compiled:
            compiled.append(size)
        if size > count:
            padding = np.zeros((size - count, *images.shape[1:]), images.dtype)
            images = np.concatenate([images, padding])
        outputs = run(
            [variable.value for variable in model.trainable_variables],
            [variable.value for variable in model.non_trainable_variables],
            images,
        )
        return np.asarray(outputs)[:count]

    return forward


def _torch_forward(model: Any) -> Forward:
    import keras
    import torch

    def forward(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return keras.ops.convert_to_numpy(model(images, training=False))

    return forward


def tensorflow_batches(columns: tuple[np.ndarray, ...], batch_size: int, seed: int | None) -> Any:
    """A tf.data pipeline of `columns` in batches, shuffled each epoch from `seed` (None: in
    order): TensorFlow's fastest input to `fit` from arrays in memory."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if seed is not None:
        dataset = dataset.shuffle(len(columns[0]), seed=seed)
    return dataset.batch(batch_size)


def deterministic(seed: int) -> None:
    """Same data and params give the same weights on this machine: every random generator seeded
    (Python's, NumPy's, the backend's) and the backend's kernels made deterministic where it can:
    TensorFlow's op determinism; PyTorch's deterministic algorithms (warning, not failing, where
    an op has none); on JAX the CPU is deterministic, and the GPU is only if XLA_FLAGS holds
    JAX_DETERMINISM_FLAG before JAX starts (set here for processes that start it later)."""
    import keras

    keras.utils.set_random_seed(seed)
    backend = name()
    if backend == TENSORFLOW:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == TORCH:
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
    elif JAX_DETERMINISM_FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {JAX_DETERMINISM_FLAG}"


def share_machine(threads: int) -> None:
    """In a fresh worker process (a Ray actor), before the backend runs anything: as many
    compute threads as the CPUs reserved for it (a backend would otherwise take every core, once
    per process; JAX has no such setting), and GPU memory taken as needed, so that processes
    sharing a GPU fit (TensorFlow and JAX otherwise map most of a GPU's memory in the first
    process; PyTorch's allocator grows as needed by itself)."""
    backend = name()
    if backend == TENSORFLOW:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    elif backend == TORCH:
        import torch

        torch.set_num_threads(threads)
    else:
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # read when JAX starts its backends


def leave_gpus() -> None:
    """In a process that builds a model only to hand its weights to worker processes: leave the
    GPUs to them. TensorFlow hides its GPUs here (it would otherwise map all of every GPU's
    memory); JAX takes GPU memory only as needed here, if it has not started yet; PyTorch takes
    only what it uses."""
    backend = name()
    if backend == TENSORFLOW:
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            tf.config.set_visible_devices([], "GPU")
    elif backend == JAX:
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
