"""Optional dependencies: imported where they are used, with a clear message naming the extra."""

from __future__ import annotations

import importlib

from vidtune.errors import MissingExtraError


def require(module: str, what: str, extra: str, package: str | None = None):
    """Import ``module`` or raise :class:`MissingExtraError` (``pip install 'vidtune[extra]'``).

    Args:
        module: the import name (``faster_whisper``).
        what: the feature that needs it, as the user knows it ("speech transcription").
        extra: the vidtune extra that installs it.
        package: the distribution name on the registry, when it differs from ``module``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name.split(".")[0] if exc.name else module
        if missing != module.split(".")[0]:  # the package is there but one of *its* dependencies is not
            package = missing.replace("_", "-")
        raise MissingExtraError(what, package or module.replace("_", "-"), extra) from None
