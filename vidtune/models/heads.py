"""Temporal heads: fuse per-frame features ``(B, T, D)`` into clip logits ``(B, K)``.

Registered by name for ``--temporal``; each takes the frame features the encoder (or the feature
cache) produces, so the same head trains on cached features or end to end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TEMPORAL_HEADS: dict[str, type[TemporalHead]] = {}


def register_head(name: str):
    def deco(cls):
        if name in TEMPORAL_HEADS:
            raise ValueError(f"temporal head {name!r} is already registered")
        cls.kind = name
        TEMPORAL_HEADS[name] = cls
        return cls

    return deco


class TemporalHead(nn.Module):
    kind = "base"

    def __init__(self, in_dim: int, num_classes: int, frames: int, dropout: float = 0.2, dim: int = 256):
        super().__init__()
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.frames = frames

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """Clip embedding ``(B, E)`` before the classifier."""
        raise NotImplementedError

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, K)
        return self.fc(self.drop(self.pool(feats)))


@register_head("mean")
class MeanHead(TemporalHead):
    """The seed tutorial's (and TSN's) consensus: average frame features, then a linear classifier."""

    def __init__(self, in_dim, num_classes, frames, dropout=0.2, dim=256):
        super().__init__(in_dim, num_classes, frames, dropout, dim)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, num_classes)

    def pool(self, feats):
        return feats.mean(dim=1)  # (B, D)


def _resample_positions(pos: torch.Tensor, t: int) -> torch.Tensor:
    """Position embeddings ``(T0, E)`` stretched to ``t`` frames (the clip spans the same time)."""
    if pos.shape[0] == t:
        return pos
    # frames sit at segment centres, so align_corners=False maps centre times exactly
    return F.interpolate(pos.t()[None], size=t, mode="linear", align_corners=False)[0].t()


@register_head("attention")
class AttentionHead(TemporalHead):
    """Attention pooling with a learned query over projected frame tokens plus temporal positions.

    Tokens are ``LN(W x_t) + p_t``, so the pooled vector depends on which frame came when, not only
    on the set of frames (a mean cannot tell "opening" from "closing"). Projecting to ``dim`` keeps
    the head small enough for few-shot training on frozen features.
    """

    def __init__(self, in_dim, num_classes, frames, dropout=0.2, dim=256, heads=4):
        super().__init__(in_dim, num_classes, frames, dropout, dim)
        if dim % heads:
            raise ValueError(f"attention head width {dim} must be a multiple of its {heads} heads")
        self.proj = nn.Linear(in_dim, dim)
        self.norm_in = nn.LayerNorm(dim)
        self.pos = nn.Parameter(torch.zeros(frames, dim))
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.query, std=0.02)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.norm_out = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def pool(self, feats):
        b, t, _ = feats.shape
        tokens = self.norm_in(self.proj(feats)) + _resample_positions(self.pos, t)[None]  # (B, T, E)
        pooled, weights = self.attn(self.query.expand(b, -1, -1), tokens, tokens, need_weights=not self.training)
        self.last_weights = None if weights is None else weights.detach()  # (B, 1, T): what the head looked at
        return self.norm_out(pooled[:, 0])  # (B, E)


def create_head(kind: str, in_dim: int, num_classes: int, frames: int, **kwargs) -> TemporalHead:
    if kind not in TEMPORAL_HEADS:
        raise ValueError(f"unknown temporal head {kind!r}; choose from {', '.join(TEMPORAL_HEADS)}")
    return TEMPORAL_HEADS[kind](in_dim, num_classes, frames, **kwargs)
