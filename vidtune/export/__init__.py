"""A trained run leaves vidtune: ONNX / OpenVINO / TorchScript files with their preprocessing as JSON.

- :mod:`vidtune.export.formats`: writing a module to each format and running the written file
  (also used by :mod:`vidtune.runs.engines` for the frozen backbone of feature passes);
- :mod:`vidtune.export.exporter`: ``export_run`` (the whole classifier, the JSON beside it, parity);
- :mod:`vidtune.export.int8`: static int8 quantisation calibrated on the user's own frames.

Heavy libraries (onnx, onnxruntime, openvino) are imported inside functions: they are optional
extras (``pip install 'vidtune[onnx]'``, ``'vidtune[openvino]'``).
"""

from vidtune.export.sessions import RUNTIME_EXTRAS

__all__ = ["FORMATS", "RUNTIME_EXTRAS", "export_run"]
FORMATS = ("onnx", "openvino", "torchscript")  # vidtune.export.formats.FORMATS (that module imports torch)


def export_run(*args, **kwargs):
    """See :func:`vidtune.export.exporter.export_run` (imported on first use: it loads torch models)."""
    from vidtune.export.exporter import export_run as _export_run

    return _export_run(*args, **kwargs)
