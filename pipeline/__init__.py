"""ai-image-classifier: a DVC pipeline that tells real photographs from AI-generated images."""

import atexit
import gc
import os

# TensorFlow's C++ start-up chatter buries the stages' own output; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# At exit, CPython's last garbage collection walks every object the libraries created: about a
# second in a process that imported TensorFlow, twice per head experiment (BENCHMARKS.md).
# Outputs are closed and renamed into place before exit, so nothing needs that collection.
atexit.register(gc.freeze)

__version__ = "0.1.0"
