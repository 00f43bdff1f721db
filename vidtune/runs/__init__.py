"""A trained run and everything that serves it: the layer below ``train/``, ``tag/`` and ``index/``.

- :mod:`vidtune.runs.config`: the run folder's ``config.json`` as a typed, validated object;
- :mod:`vidtune.runs.store`: writing weights and loading a run for inference (no pickle);
- :mod:`vidtune.runs.features`: frame sampling, decoding workers and the on-disk feature cache;
- :mod:`vidtune.runs.inference`: ``run_clips`` (every way a run is applied to videos), ``predict``, ``evaluate``;
- :mod:`vidtune.runs.metrics`, :mod:`vidtune.runs.robustness`: what a run scores, clean and corrupted;
- :mod:`vidtune.runs.device`: device choice and autocast precision;
- :mod:`vidtune.runs.light`, :mod:`vidtune.runs.lean`: a run served by its built engines (the backbone alone,
  or backbone and head without importing torch); how engines run is :mod:`vidtune.engines`'s.
"""

__all__ = ["ModelSpec", "RunConfig", "LoadedRun", "load_run", "resolve_device"]

_WHERE = {"ModelSpec": "config", "RunConfig": "config", "LoadedRun": "store", "load_run": "store",
          "resolve_device": "device"}


def __getattr__(name):  # lazy: a command that runs an exported engine never imports torch
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"vidtune.runs.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'vidtune.runs' has no attribute {name!r}")
