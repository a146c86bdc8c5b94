"""Specific exceptions whose messages a photographer understands.

Every message names the file or folder concerned and says what to do next.
"""

from __future__ import annotations


class VitrineError(Exception):
    """Base class of all errors the engine raises on purpose."""

    #: Process exit code the command line uses for this error.
    exit_code = 1


class InputError(VitrineError):
    """The photos given cannot be used (missing, unreadable, too few ...)."""

    exit_code = 2


class NotEnoughImagesError(InputError):
    """Fewer usable photos than a reconstruction needs."""


class ReconstructionError(VitrineError):
    """A stage ran but could not produce a usable result from these photos."""

    exit_code = 3


class OutputError(VitrineError):
    """The run folder cannot be written (read-only, disk full ...)."""

    exit_code = 4


class ModelError(VitrineError):
    """A neural network's weights are missing, corrupt or refused."""

    exit_code = 5
