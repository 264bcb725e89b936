"""ai-image-classifier: a DVC pipeline that tells real photographs from AI-generated images."""

import os

# TensorFlow's C++ start-up chatter buries the stages' own output; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
