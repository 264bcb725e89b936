"""ai-image-classifier: a DVC pipeline that tells real photographs from AI-generated images."""

__version__ = "0.1.0"
