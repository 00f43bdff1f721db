"""How a network runs: PyTorch (eager or TorchScript), ONNX Runtime or OpenVINO, and the engine files.

The layer below :mod:`vidtune.runs`; it knows networks (:mod:`vidtune.models`), never runs, manifests or
the CLI.

- :mod:`vidtune.engines.runtime`: which runtime a command asked for, where engines live, threads (no torch);
- :mod:`vidtune.engines.sessions`: an ONNX / OpenVINO file opened for inference (no torch);
- :mod:`vidtune.engines.formats`: writing a module as ONNX, OpenVINO IR or TorchScript, and running the file;
- :mod:`vidtune.engines.cache`: the engine cache: files with the digest recorded when written, checked when
  opened (a damaged engine is rebuilt), the sessions kept per process, and the locks around both;
- :mod:`vidtune.engines.build`: a frozen encoder's engine file written (or repaired) and opened;
- :mod:`vidtune.engines.int8`: static int8 quantisation and the int8 engine's calibration record;
- :mod:`vidtune.engines.jit`: the TorchScript graph PyTorch runs big CPU jobs with;
- :mod:`vidtune.engines.choice`: ``--runtime auto``, the engine measured fastest on this machine;
- :mod:`vidtune.engines.backbone`: the engine running a frozen encoder in a feature pass, and a plain
  backbone served by its built engine without building it in PyTorch.

Importing this package imports nothing; :mod:`~vidtune.engines.runtime` and :mod:`~vidtune.engines.sessions`
never import torch (the engine-only ``predict`` path stands on them).
"""
