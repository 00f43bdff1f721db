"""A trained run leaves vidtune: ONNX / OpenVINO / TorchScript files with their preprocessing as JSON.

- :mod:`vidtune.export.exporter`: ``export_run`` (the whole classifier, the JSON beside it, parity);
- :mod:`vidtune.export.int8`: the exported file quantised to int8 on the run's training clips, and its
  accuracy change on the validation clips.

Writing each format and running the written file is the engines layer's
(:mod:`vidtune.engines.formats`); ``export`` sits above :mod:`vidtune.runs` and nothing below imports it.

Heavy libraries (onnx, onnxruntime, openvino) are imported inside functions: they are optional
extras (``pip install 'vidtune[onnx]'``, ``'vidtune[openvino]'``).
"""

from vidtune.engines.sessions import FORMATS, RUNTIME_EXTRAS

__all__ = ["FORMATS", "RUNTIME_EXTRAS", "export_run"]


def export_run(*args, **kwargs):
    """See :func:`vidtune.export.exporter.export_run` (imported on first use: it loads torch models)."""
    from vidtune.export.exporter import export_run as _export_run

    return _export_run(*args, **kwargs)
