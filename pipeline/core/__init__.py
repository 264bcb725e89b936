"""The plumbing every other part stands on: errors, atomic file writing, the project's paths,
entry points, experiment tracking, figures and Markdown tables. Imports nothing of pipeline's
outside core."""
