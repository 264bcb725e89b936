"""The project's exceptions. Library code raises them; only the CLI and the stage entry points
(pipeline.core.entry) turn them into a one-paragraph message and a non-zero exit, and the app shows
the same message."""

from __future__ import annotations

from collections.abc import Iterable


class AiicError(Exception):
    """An error whose message is a complete explanation for a person: what, why, what to do."""


class ConfigError(AiicError, ValueError):
    """A setting that is missing, unknown or out of range."""


def not_one_of(setting: str, value: object, allowed: Iterable[object]) -> ConfigError:
    """The error for a setting whose value is not among `allowed`, listing them."""
    choices = ", ".join(repr(choice) for choice in allowed)
    return ConfigError(f"{setting} is {value!r}; allowed values: {choices}.")


class BackendMismatch(AiicError):
    """Something that only one Keras backend can do (TensorFlow's SavedModel and LiteRT exports),
    asked of a process that runs another (KERAS_BACKEND)."""


class MissingWeights(AiicError, FileNotFoundError):
    """Pretrained weights are neither cached nor downloadable."""


class ModelNotFound(AiicError, FileNotFoundError):
    """No exported model where one was expected."""


class MissingInput(AiicError, FileNotFoundError):
    """A file that an earlier stage should have written is not there."""


class StageFailed(AiicError, RuntimeError):
    """A stage ran but its result cannot be trusted or is empty (the message says why)."""
