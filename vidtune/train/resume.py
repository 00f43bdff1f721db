"""Resumable training state: one safetensors file in the run folder, replaced atomically every epoch.

``checkpoint.safetensors`` holds the trained weights, the best epoch's weights, the optimiser's
tensors and the random generators' states as tensors, and everything else (epoch, history, early
stopping state, scheduler and gradient-scaler state, the run's arguments) as JSON in the file's
metadata. One file means one atomic rename: a crash leaves either the previous epoch's checkpoint
or the new one, never a tensors file and a JSON file from different epochs. Nothing is unpickled,
and a checksum over the tensors catches a damaged or tampered file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from vidtune.errors import CheckpointError
from vidtune.utils import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
FORMAT = "vidtune-train-state"
FORMAT_VERSION = 1


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """BLAKE2b over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_state(path, tensors: dict[str, torch.Tensor], state: dict) -> None:
    """Write tensors + JSON state as one safetensors file, atomically (temporary file + rename)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "digest": tensor_digest(tensors),
            "state": json.dumps(state, separators=(",", ":"))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_state(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint written by :func:`save_state`; a clear :class:`CheckpointError` otherwise."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); it is damaged or was tampered "
                              "with. Delete it to train from the first epoch.") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vidtune training checkpoint (format {meta.get('format')!r}); "
                              "remove it or use another --out")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise CheckpointError(f"{path}: bad format_version {meta.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer vidtune (checkpoint format {version}); upgrade vidtune")
    if tensor_digest(tensors) != meta.get("digest"):
        raise CheckpointError(f"{path}: checksum mismatch: the file is damaged or was tampered with. Delete it "
                              "to train from the first epoch.")
    try:
        state = json.loads(meta["state"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: damaged training state ({exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: damaged training state (not a JSON object)")
    return tensors, state


def mismatch(saved: dict, current: dict) -> list[str]:
    """``name: saved -> current`` for every setting that differs."""
    keys = sorted(set(saved) | set(current))
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


# -- optimiser, scheduler, generators as tensors + JSON -------------------------------------------
def pack_optimizer(opt: torch.optim.Optimizer, prefix: str = "opt/") -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{pid}/{name}"] = value
            else:
                scalars[f"{pid}/{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unpack_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                     prefix: str = "opt/") -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, name = key[len(prefix):].split("/", 1)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def rng_tensors(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The epoch-order generator and torch's global generators (dropout) as uint8 tensors."""
    out = {"rng/order": gen.get_state(), "rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng/cuda/{i}"] = s
    return out


def restore_rng(gen: torch.Generator, tensors: dict[str, torch.Tensor]) -> None:
    gen.set_state(tensors["rng/order"])
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng/cuda/")),
                                       key=lambda k: int(k.rsplit("/", 1)[1]))]
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("the checkpoint has %d CUDA generator states for %d devices; CUDA random streams restart",
                        len(cuda), torch.cuda.device_count())


def strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
