"""A trained run and everything that serves it: the layer below ``train/``, ``tag/`` and ``index/``.

- :mod:`vidtune.runs.config`: the run folder's ``config.json`` as a typed, validated object;
- :mod:`vidtune.runs.store`: writing weights and loading a run for inference (no pickle);
- :mod:`vidtune.runs.features`: frame sampling, decoding workers and the on-disk feature cache;
- :mod:`vidtune.runs.inference`: ``run_clips`` (every way a run is applied to videos), ``predict``, ``evaluate``;
- :mod:`vidtune.runs.metrics`, :mod:`vidtune.runs.robustness`: what a run scores, clean and corrupted;
- :mod:`vidtune.runs.device`: device choice and autocast precision.
"""

from vidtune.runs.config import ModelSpec, RunConfig
from vidtune.runs.device import resolve_device
from vidtune.runs.store import LoadedRun, load_run

__all__ = ["ModelSpec", "RunConfig", "LoadedRun", "load_run", "resolve_device"]
