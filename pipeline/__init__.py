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

# Importing TensorFlow and Keras leaves some 400,000 objects that live as long as the process, and
# the six full collections that run while they load walk them all: half a second or more of every
# TensorFlow stage's start-up (BENCHMARKS.md). A full collection now waits for a thousand
# collections of the middle generation, not ten; young objects are collected as before.
gc.set_threshold(*gc.get_threshold()[:2], 1000)

__version__ = "0.1.0"
