"""Images as data: decoding and shaping for a model, class balancing, and drawing on images.
May import pipeline.core only."""
