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


class ConfigError(VidtuneError, ValueError):
    """A configuration field has a value it cannot take.

    The library speaks in field names (``grid``, ``stride``); the CLI shows the matching flag
    (``--grid``) through :func:`vidtune.cli.flags.flag_for`. ``problem`` completes the sentence
    "<field> ...", e.g. ``"must be between 1 and 7, got 9"``.
    """

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field} {problem}")


class IndexStoreError(VidtuneError):
    """An index folder is missing, damaged, or incompatible with the request."""


IndexError_ = IndexStoreError  # the name it had in vidtune.index.store


class ModelMismatchError(IndexStoreError):
    """Vectors from another model (or other embedding parameters) than the index was built with."""


class SampleDataError(VidtuneError, ValueError):
    """Invalid arguments for :func:`vidtune.data.sample.write_sample_dataset` (a ``ValueError``)."""


class SampleDataExistsError(VidtuneError, FileExistsError):
    """The output folder already holds files and ``overwrite`` was not given."""


class SpecialFileError(VideoDecodeError):
    """A path names a FIFO, a device or a socket: reading it could block or never end, so it is refused
    by type before anything reads it."""


class OutputWriteError(VidtuneError, OSError):
    """An output file or folder could not be written (disk full, read-only, a folder in the way...).

    An ``OSError`` too, so code that caught the underlying error still catches it."""

    def __init__(self, path, reason: str, hint: str = ""):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot write {self.path}: {reason}" + (f"; {hint}" if hint else ""))


class BusyError(VidtuneError):
    """Another vidtune process is writing the same run folder or index (its lock file is held)."""


class TrainingDivergedError(VidtuneError):
    """The training loss became NaN or infinite: the numbers can no longer mean anything."""


class DistributedError(VidtuneError):
    """The processes of a distributed run (torchrun) could not form a group or disagree."""
class NotServedError(VidtuneError):
    """``vidtune serve``: a request names a file, video or run that the server was not given (HTTP 404)."""


class BadRequestError(VidtuneError):
    """``vidtune serve``: a request body or parameter that fails validation (HTTP 400); the message names
    the fields."""

    status = 400


class UploadRejectedError(VidtuneError):
    """``vidtune serve``: an upload is too large (HTTP 413), of a type it cannot use (415), or not allowed
    because the server is read-only (403). ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int):
        self.status = status
        super().__init__(message)


class MissingModalityError(IndexStoreError):
    """A query kind the index was not built for (e.g. words for an index without text vectors)."""


class MissingExtraError(VidtuneError):
    """An optional feature's package is not installed; the message names the extra that brings it."""

    def __init__(self, what: str, package: str, extra: str):
        self.what, self.package, self.extra = what, package, extra
        super().__init__(f"{what} needs the optional package {package!r}, which is not installed: "
                         f"pip install 'vidtune[{extra}]'")


class NonFiniteError(VidtuneError):
    """A network gave NaN or infinite numbers (features, scores): its weights or engine are damaged. Such
    numbers are never cached, printed or written as a result."""


class JournalError(VidtuneError):
    """The label journal or its manifest cannot be used as they are (damaged, foreign, edited by hand)."""


class LabelConflictError(VidtuneError):
    """An action that contradicts the label journal's state (HTTP 409): another label already stands, or
    there is nothing to undo."""

    status = 409


class RetrainConflictError(VidtuneError):
    """A retrain asked for while one is running (HTTP 409)."""

    status = 409
