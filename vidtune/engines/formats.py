"""Write a torch module to ONNX, OpenVINO IR or TorchScript, and run the written file.

One input, one output, the batch dimension dynamic. ONNX comes from torch's TorchScript-based
exporter when it can (EfficientNet-Lite0 in 1 s against 15 s for the dynamo exporter, same graph speed
in ONNX Runtime), else from the dynamo exporter (token grids: ``adaptive_avg_pool2d`` to a grid with a
dynamic batch is beyond the older one). Each written graph is run at two batch sizes against the
module before it is accepted. OpenVINO IR is converted from that ONNX file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from vidtune.engines.sessions import (  # noqa: F401 (re-exported)
    FORMATS,
    RUNTIME_EXTRAS,
    openvino_compiled,
    ort_session,
    require,
    runtime_installed,
)
from vidtune.errors import ConfigError, VidtuneError
from vidtune.utils import atomic_path

log = logging.getLogger(__name__)

SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt"}
OPSET = 18


@contextlib.contextmanager
def quiet():
    """The exporters print progress and warnings; the library never prints (the CLI owns the terminal)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def write_onnx(module: torch.nn.Module, example: torch.Tensor, path, input_name: str = "input",
               output_name: str = "output") -> str:
    """``module`` as an ONNX file at ``path`` (atomically); returns which exporter produced it."""
    require("onnx", "onnx")
    module = module.eval()
    path = Path(path)
    errors = []
    for dynamo in (False, True):
        try:
            with atomic_path(path) as tmp, quiet(), torch.no_grad():
                if dynamo:
                    require("onnxscript", "onnx")
                    batch = torch.export.Dim("batch", min=1, max=65536)
                    torch.onnx.export(module, (example,), str(tmp), dynamo=True, input_names=[input_name],
                                      output_names=[output_name], dynamic_shapes={_arg_name(module): {0: batch}},
                                      opset_version=OPSET, external_data=False, verbose=False)
                else:
                    torch.onnx.export(module, (example,), str(tmp), dynamo=False, input_names=[input_name],
                                      output_names=[output_name], opset_version=17,
                                      dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
            _verify(module, path, example)
            return "torch.onnx.export (dynamo)" if dynamo else "torch.onnx.export (TorchScript-based)"
        except VidtuneError:
            raise
        except Exception as exc:  # exporter limits differ: try the other one before giving up
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")
            log.info("ONNX export failed (%s)", errors[-1])
    raise VidtuneError("cannot export this model to ONNX (" + "; ".join(errors) + ")")


def _verify(module: torch.nn.Module, path: Path, example: torch.Tensor, tol: float = 1e-3) -> None:
    """The graph must give the module's outputs at batch 1 and 3 (a shape baked in by tracing shows here)."""
    sess = ort_session(path)
    name = sess.get_inputs()[0].name
    for b in (1, 3):
        x = torch.randn(b, *example.shape[1:], generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            ref = module(x).float().numpy()
        got = sess.run(None, {name: x.numpy()})[0]
        if got.shape != ref.shape or not np.abs(got - ref).max() <= tol * max(1.0, float(np.abs(ref).max())):
            path.unlink(missing_ok=True)
            raise RuntimeError(f"the written graph differs from the module at batch {b}")


def _arg_name(module: torch.nn.Module) -> str:
    import inspect

    params = [p for p in inspect.signature(module.forward).parameters.values()]
    return params[0].name


def write_openvino(module: torch.nn.Module, example: torch.Tensor, path, input_name: str = "input",
                   output_name: str = "output") -> str:
    """OpenVINO IR (``path`` .xml + the .bin beside it), converted from an ONNX export."""
    ov = require("openvino", "openvino")
    path = Path(path)
    if path.suffix != ".xml":
        raise ConfigError("out", f"must end in .xml for OpenVINO (its weights go to a .bin beside it), got {path.name}")
    onnx_tmp = path.with_name(f".{path.stem}.{os.getpid()}.onnx")
    try:
        how = write_onnx(module, example, onnx_tmp, input_name, output_name)
        with quiet():
            model = ov.convert_model(str(onnx_tmp))
        bin_path = path.with_suffix(".bin")
        with atomic_path(path) as tmp_xml:
            ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
            tmp_bin = Path(tmp_xml).with_suffix(".bin")
            os.replace(tmp_bin, bin_path)  # the .bin first: the .xml names it, so it must be there
    finally:
        onnx_tmp.unlink(missing_ok=True)
    return f"openvino (from the {how} ONNX export)"


def write_torchscript(module: torch.nn.Module, example: torch.Tensor, path, **_) -> str:
    """A traced, frozen TorchScript archive (``torch.jit.load`` runs it without vidtune's code)."""
    with quiet(), torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(module.eval(), (example,), check_trace=False))
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(traced, str(tmp))
    return "torch.jit.trace + freeze"


WRITERS = {"onnx": write_onnx, "openvino": write_openvino, "torchscript": write_torchscript}


def write(fmt: str, module: torch.nn.Module, example: torch.Tensor, path, **names) -> str:
    if fmt not in WRITERS:
        raise ConfigError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return WRITERS[fmt](module, example, path, **names)


class ExportedModel:
    """A written model file, run on CPU: ``model(x: float32 ndarray) -> ndarray``."""

    def __init__(self, path, fmt: str, threads: int | None = None):
        self.path = Path(path)
        self.format = fmt
        if fmt == "onnx":
            self._sess = ort_session(self.path, threads)
            self._input = self._sess.get_inputs()[0].name
        elif fmt == "openvino":
            self._compiled = openvino_compiled(self.path, threads, latency=False)
        elif fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, still works
                self._jit = torch.jit.load(str(self.path), map_location="cpu").eval()
        else:
            raise ConfigError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.format == "onnx":
            return self._sess.run(None, {self._input: x})[0]
        if self.format == "openvino":
            return np.asarray(self._compiled(x)[0])
        with torch.inference_mode():
            return self._jit(torch.from_numpy(x)).numpy()
