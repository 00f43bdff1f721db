"""Domain exceptions.

Every error a user can cause derives from :class:`VidtuneError`; the CLI prints its message (no
traceback) and exits with ``exit_code``. Messages say what is wrong *and* how to fix it.
"""

from __future__ import annotations


class VidtuneError(Exception):
    """Base class for errors caused by input, configuration or environment (not bugs)."""

    exit_code = 2


class VideoDecodeError(VidtuneError):
    """A file could not be opened or decoded as a video."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DatasetError(VidtuneError):
    """A dataset folder or manifest is missing, empty or malformed."""


class UnknownBackboneError(VidtuneError):
    """A backbone name is not registered and is not a timm/torchvision model."""


class WeightsError(VidtuneError):
    """Pretrained weights are unavailable or do not fit the model."""


class CheckpointError(VidtuneError):
    """A run directory or checkpoint is missing, foreign or tampered with."""
