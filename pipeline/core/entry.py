"""The boundary between library code and a person: stage and CLI entry points.

`run(main, name)` calls a stage's or command's `main()`, turning the project's exceptions (and
the ValueError / FileNotFoundError of bad input) into one paragraph on stderr and exit status 1
(with AIIC_DEBUG=1, the traceback instead).
`tune_startup()` is the process-wide start-up tuning that only entry points apply, never an import
of the library (the app, Scrapy and tests keep Python's defaults); `quiet_tensorflow_logs()`, part
of it, is also called by the app.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
import sys
from collections.abc import Callable

from pipeline.core.errors import AiicError

# Errors of input, not of the program: a message is enough; anything else keeps its traceback.
REPORTED = (AiicError, ValueError, FileNotFoundError)
DEBUG_ENV = "AIIC_DEBUG"  # set to see the traceback behind a reported error
FULL_COLLECTION_EVERY = 1000  # middle-generation collections between full ones (Python's: 10)
TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
CUDA_DRIVER = "libcuda.so.1"  # the NVIDIA driver's library, which TensorFlow's CUDA stub opens


def cuda_driver_present() -> bool:
    """Whether TensorFlow could reach a GPU here: Linux with NVIDIA's driver library loadable
    and CUDA_VISIBLE_DEVICES not hiding every device. Without one, TensorFlow's CUDA platform
    still calls cuInit when it lists devices, and logs the failure as an error."""
    if not sys.platform.startswith("linux"):
        return False
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    try:
        ctypes.CDLL(CUDA_DRIVER)
    except OSError:
        return False
    return True


def quiet_tensorflow_logs() -> None:
    """TensorFlow's C++ log level for this process and its children, unless already set.

    INFO and WARNING lines are left out (level 2). On a machine where no GPU can be reached,
    errors too (level 3): the one TensorFlow's C++ side logs there in a normal run is its CUDA
    platform's `failed call to cuInit`, and the errors TensorFlow raises reach Python as
    exceptions whatever the level. With a driver present errors stay, since a cuInit failure
    there is a broken GPU set-up worth seeing; the devices TensorFlow uses are never changed. The
    INFO lines logged while TensorFlow's libraries load, before absl logging is initialised, go
    to stderr whatever the level (abseil/abseil-cpp#1957).
    """
    os.environ.setdefault(TF_LOG_LEVEL_ENV, "2" if cuda_driver_present() else "3")


def tune_startup() -> None:
    """Cheaper start and exit for a short-lived process that imports TensorFlow.

    Importing TensorFlow and Keras leaves some 400,000 objects that live as long as the process;
    the full collections that run while they load walk them all, and so does CPython's last
    collection at exit (BENCHMARKS.md measures both). Outputs are closed and renamed into place
    before exit, so that last collection has nothing to do.
    """
    quiet_tensorflow_logs()
    gc.set_threshold(*gc.get_threshold()[:2], FULL_COLLECTION_EVERY)
    atexit.register(gc.freeze)


def message(error: BaseException) -> str:
    """One paragraph: the error's own text, or the OS's for a missing file."""
    if isinstance(error, FileNotFoundError) and not isinstance(error, AiicError) and error.filename:
        return f"no such file or folder: {error.filename}"
    return " ".join(str(error).split()) or type(error).__name__


def run(main: Callable[[], object], name: str) -> None:
    """Call `main()`; a reported error becomes 'name: message' on stderr and exit status 1."""
    try:
        main()
    except REPORTED as error:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{name}: {message(error)}", file=sys.stderr)
        raise SystemExit(1) from None
