"""The networks and what runs them: backbones, trained networks, heads, calibration, backends,
engines, export formats, metrics and occlusion maps. May import pipeline.core and pipeline.data."""
