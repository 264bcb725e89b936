"""The DVC stages (one module each, a small main() run by `python -m pipeline <stage>`) and the
params.yaml schema they read. May import every group below: core, data, models, serving."""
