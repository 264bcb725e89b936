"""The boundary between library code and a person: stage and CLI entry points.

`run(main, name)` calls a stage's or command's `main()`, turning the project's exceptions (and
the ValueError / FileNotFoundError of bad input) into one paragraph on stderr and exit status 1
(with AIIC_DEBUG=1, the traceback instead).
`tune_startup()` is the process-wide start-up tuning that only entry points apply, never an import
of the library (the app, Scrapy and tests keep Python's defaults).
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from collections.abc import Callable

from pipeline.errors import AiicError

# Errors of input, not of the program: a message is enough; anything else keeps its traceback.
REPORTED = (AiicError, ValueError, FileNotFoundError)
DEBUG_ENV = "AIIC_DEBUG"  # set to see the traceback behind a reported error
FULL_COLLECTION_EVERY = 1000  # middle-generation collections between full ones (Python's: 10)


def tune_startup() -> None:
    """Cheaper start and exit for a short-lived process that imports TensorFlow.

    Importing TensorFlow and Keras leaves some 400,000 objects that live as long as the process;
    the full collections that run while they load walk them all, and so does CPython's last
    collection at exit (BENCHMARKS.md measures both). Outputs are closed and renamed into place
    before exit, so that last collection has nothing to do.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ chatter out
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
