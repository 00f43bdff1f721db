"""Temporal Shift Module (TSM, Lin et al. 2019) inside a 2D backbone.

A shift moves ``1/fold_div`` of the channels one frame back in time and another ``1/fold_div`` one
frame forward, at zero extra parameters and FLOPs, so the 2D convolutions that follow mix
information from neighbouring frames. As in the paper's *residual shift*, it is applied at the start
of the residual branch of blocks that have a skip connection (the identity path keeps the frame's
own features). It is added with forward pre-hooks, so the backbone's weight names do not change and
ImageNet or earlier-run weights load as they are.

Frames of one clip must be contiguous in the batch: ``(B * T, C, H, W)`` with ``T`` set by the
caller (:class:`vidtune.models.classifier.VideoClassifier` sets it on every forward pass).
"""

from __future__ import annotations

import torch
from torch import nn

from vidtune.errors import VidtuneError


def temporal_shift(x: torch.Tensor, frames: int, fold_div: int = 8) -> torch.Tensor:
    """Shift channel groups of ``x`` ``(B * T, C, H, W)`` along time; zero-padded at the clip ends.

    Channels ``[0, C/fold_div)`` take the *next* frame's values, ``[C/fold_div, 2C/fold_div)`` the
    *previous* frame's; the rest stay.
    """
    nt, c = x.shape[:2]
    if nt % frames:
        raise ValueError(f"batch of {nt} frames is not a whole number of {frames}-frame clips")
    x = x.view(nt // frames, frames, c, *x.shape[2:])
    fold = c // fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]  # from the future
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]  # from the past
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.view(nt, c, *x.shape[3:])


class ShiftState:
    """Clip length shared by every shift hook of one encoder."""

    def __init__(self, frames: int, fold_div: int):
        self.frames = frames
        self.fold_div = fold_div


def residual_branches(model: nn.Module) -> dict[str, nn.Module]:
    """``{block name: first conv of its residual branch}`` for blocks with an identity skip.

    Knows timm's EfficientNet/MobileNet blocks (``has_skip``), torchvision's MobileNet/EfficientNet
    blocks (``use_res_connect``) and ResNet ``BasicBlock``/``Bottleneck`` (timm and torchvision).
    """
    found: dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if getattr(m, "has_skip", False):  # timm InvertedResidual / DepthwiseSeparableConv / EdgeResidual
            first = next((getattr(m, a) for a in ("conv_pw", "conv_dw", "conv_exp") if hasattr(m, a)), None)
            if isinstance(first, nn.Conv2d):
                found[name] = first
        elif getattr(m, "use_res_connect", False) and isinstance(getattr(m, "block", None), nn.Sequential):
            first = next((c for c in m.block.modules() if isinstance(c, nn.Conv2d)), None)  # torchvision MobileNet
            if first is not None:
                found[name] = first
        elif type(m).__name__ in ("BasicBlock", "Bottleneck") and isinstance(getattr(m, "conv1", None), nn.Conv2d):
            if getattr(m, "downsample", None) is None:  # identity skip only (the paper's choice too)
                found[name] = m.conv1
    return found


def add_temporal_shift(encoder: nn.Module, frames: int, fold_div: int = 8,
                       blocks: list[str] | None = None, within: list[nn.Module] | None = None) -> list[str]:
    """Insert shifts into ``encoder.model``; returns the names of the shifted blocks.

    ``blocks``: exactly these (a saved run's list). ``within``: only blocks inside these modules
    (the trainable stages of a ``partial`` fine-tune: shifting frozen layers would only corrupt
    features the training cannot adapt). Default: every residual block.
    """
    if fold_div < 3:
        raise VidtuneError(f"tsm fold_div must be >= 3 (two shifted groups and an unshifted rest), got {fold_div}")
    branches = residual_branches(encoder.model)
    if blocks is not None:
        missing = [b for b in blocks if b not in branches]
        if missing:
            raise VidtuneError(f"cannot add temporal shifts: blocks {missing[:3]} not found in {encoder.name}")
        chosen = list(blocks)
    else:
        allowed = None
        if within is not None:
            allowed = {id(m) for group in within for m in group.modules()}
        chosen = [n for n, conv in branches.items() if allowed is None or id(conv) in allowed]
    if not chosen:
        raise VidtuneError(
            f"--temporal tsm: {encoder.name} has no residual blocks to shift"
            + (" in its trainable stages; raise --unfreeze or use --strategy full" if within is not None else
               "; use a ResNet or EfficientNet/MobileNet-style backbone"))
    state = ShiftState(frames, fold_div)

    def hook(_module, inputs):
        return (temporal_shift(inputs[0], state.frames, state.fold_div),) + tuple(inputs[1:])

    for name in chosen:
        branches[name].register_forward_pre_hook(hook)
    encoder.shift_state = state
    encoder.shift_blocks = chosen
    encoder.frame_independent = False
    encoder._shift_id = f"-tsm{fold_div}:{len(chosen)}"
    return chosen
