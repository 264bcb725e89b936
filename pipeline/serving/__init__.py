"""Using an exported model: loading it, scoring files and URLs (aiic predict / evaluate), and the
HTTP server (aiic serve). May import pipeline.core, pipeline.data and pipeline.models."""
