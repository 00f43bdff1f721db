"""Temporal heads: fuse per-frame features into clip logits ``(B, K)``.

Registered by name for ``--temporal``; each takes the frame features the encoder (or the feature
cache) produces, so the same head trains on cached features or end to end. Features are pooled
vectors ``(B, T, D)`` or space-time tokens ``(B, T, G, D)``: a coarse ``g x g`` grid of the last
feature map per frame (``G = g * g``), which keeps where things are and how big they are. A head
built with ``flow=C`` reads the last ``C`` channels of every token as the frame's optical-flow cues
(:mod:`vidtune.data.flow`): a flow token per frame for the token heads, their clip mean for ``mean``.

A head built with ``audio=A`` also reads, after those, each segment's audio embedding (``A``
channels) and a ``present`` flag (:mod:`vidtune.runs.sound`). ``fusion="mid"``: attention and
transformer heads append one audio token per segment (with its own modality embedding and the
segment's time position) to the visual tokens and attend over both; the ``mean`` head, which has no
tokens to attend over, concatenates the clip's mean audio token to its mean frame feature before
the classifier (feature-level fusion). ``fusion="late"``: a separate audio classifier over the mean
audio token, its logits mixed with the visual head's by two learned weights. A clip without sound
gets the learned "missing" token in place of its audio tokens; ``modality_dropout`` trains with
that (and, as often, with frames blanked) so neither modality can be relied on alone.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

TEMPORAL_HEADS: dict[str, type[TemporalHead]] = {}
FUSIONS = ("mid", "late")
FUSION_OPTIONS = ("audio", "fusion", "modality_dropout")  # every head takes these


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
    order_aware = True  # False: the clip embedding ignores frame order

    def __init__(self, in_dim: int, num_classes: int, frames: int, dropout: float = 0.2, dim: int = 256,
                 grid: int = 1, flow: int = 0, audio: int = 0, fusion: str = "mid", modality_dropout: float = 0.0):
        super().__init__()
        self.in_dim = in_dim  # appearance channels (the encoder's features)
        self.num_classes = num_classes
        self.frames = frames
        self.grid = grid
        self.flow = flow  # trailing flow channels per token (0: none)
        self.audio = audio  # audio embedding channels per token after those, then a present flag (0: no audio)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.fusion = fusion
        self.modality_dropout = modality_dropout
        self.sound_dim = dim if audio else 0  # width of an audio token
        if audio:
            self.sound = _AudioTokens(audio, dim, frames)
        if audio and fusion == "late":
            self.audio_fc = nn.Linear(dim, num_classes)
            self.late = nn.Parameter(torch.zeros(2))  # softmax: the visual and audio logits' weights

    @property
    def extra_channels(self) -> int:
        """Channels a token carries after the encoder's features: flow cues, audio embedding + present flag."""
        return self.flow + (self.audio + 1 if self.audio else 0)

    def split_audio(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(features without the audio channels, audio tokens (B, T, E) or None)``.

        In training with ``modality_dropout`` p, a clip with sound loses it (missing token) with
        probability p, or its frames (visual features zeroed) with probability p, never both.
        """
        if not self.audio:
            return feats, None
        a = _tokens(feats)[:, :, 0, -(self.audio + 1) :]  # (B, T, A + 1): the same for every token of a frame
        feats = feats[..., : -(self.audio + 1)]
        emb, present = a[..., :-1], a[..., -1:] > 0.5  # (B, T, A), (B, T, 1)
        if self.training and self.modality_dropout > 0:
            b, p = feats.shape[0], self.modality_dropout
            r = torch.rand(b, device=feats.device)
            has = present.any(dim=1)[:, 0]
            present = present & ~((r < p) & has)[:, None, None]
            keep = ~((r >= p) & (r < 2 * p) & has)
            feats = feats * keep.view(b, *[1] * (feats.dim() - 1)).to(feats.dtype)
        return feats, self.sound(emb, present)

    def with_sound(self, pooled: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        """The clip embedding: the pooled visual vector, and the mean audio token after it (mean head
        mid fusion, and late fusion, whose :meth:`forward` splits them again)."""
        return pooled if audio is None else torch.cat([pooled, audio.mean(dim=1)], dim=-1)

    def split_flow(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(appearance features, flow cues (B, T, C) or None)``."""
        if not self.flow:
            return feats, None
        return feats[..., : -self.flow], _tokens(feats)[:, :, 0, -self.flow :]

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """Clip embedding ``(B, E)`` before the classifier."""
        raise NotImplementedError

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, T, D) or (B, T, G, D) -> (B, K)
        z = self.pool(feats)
        if self.audio and self.fusion == "late":
            e = self.fc.in_features
            w = self.late.softmax(0)
            return w[0] * self.fc(self.drop(z[:, :e])) + w[1] * self.audio_fc(self.drop(z[:, e:]))
        return self.fc(self.drop(z))


class _AudioTokens(nn.Module):
    """``LN(W a) + p_time + type`` per segment, or the learned ``missing`` token where there is no sound."""

    def __init__(self, audio: int, dim: int, frames: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(audio, dim), nn.LayerNorm(dim))
        self.missing = nn.Parameter(torch.zeros(dim))
        self.atype = nn.Parameter(torch.zeros(dim))  # tells audio tokens from visual ones
        self.pos = nn.Parameter(torch.zeros(frames, dim))
        for p in (self.missing, self.atype, self.pos):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, emb: torch.Tensor, present: torch.Tensor) -> torch.Tensor:  # (B, T, A), (B, T, 1) -> (B, T, E)
        x = torch.where(present, self.proj(emb), self.missing.to(emb.dtype))
        return x + _resample_positions(self.pos, emb.shape[1])[None] + self.atype


def _tokens(feats: torch.Tensor) -> torch.Tensor:
    """``(B, T, D)`` or ``(B, T, G, D)`` as ``(B, T, G, D)``."""
    return feats[:, :, None] if feats.dim() == 3 else feats


@register_head("mean")
class MeanHead(TemporalHead):
    """The seed tutorial's (and TSN's) consensus: average frame features, then a linear classifier."""

    order_aware = False

    def __init__(self, in_dim, num_classes, frames, dropout=0.2, dim=256, grid=1, flow=0, **fusion):
        super().__init__(in_dim, num_classes, frames, dropout, dim, grid, flow, **fusion)
        self.drop = nn.Dropout(dropout)
        mid_audio = self.sound_dim if self.fusion == "mid" else 0
        self.fc = nn.Linear(in_dim + flow + mid_audio, num_classes)

    def pool(self, feats):
        feats, audio = self.split_audio(feats)
        x, flow = self.split_flow(feats)
        pooled = _tokens(x).mean(dim=(1, 2))  # (B, D)
        pooled = pooled if flow is None else torch.cat([pooled, flow.mean(dim=1)], dim=-1)  # (B, D [+ C])
        return self.with_sound(pooled, audio)  # (B, D [+ C] [+ E])


@register_head("flow_linear")
class FlowLinearHead(TemporalHead):
    """Logistic regression on the clip's optical-flow cues alone: the time-mean of each frame's flow
    descriptor (:mod:`vidtune.data.flow`: mean displacement per cell of a 3x3 grid plus the change of
    brightness), then one linear layer. Appearance channels are read past, never used.

    The simplest model that reads how the picture moves: with one labelled clip per class it tells
    camera motions apart on unseen photos where heads over appearance tokens are near chance. The
    flow between consecutive frames changes sign when the clip plays backwards, so it is order-aware.
    """

    order_aware = True

    def __init__(self, in_dim, num_classes, frames, dropout=0.2, dim=256, grid=1, flow=0, **fusion):
        if not flow:
            raise ValueError("the flow_linear head reads optical-flow cues: build it with flow > 0")
        if fusion.get("audio"):
            raise ValueError("the flow_linear head reads optical-flow cues only, no audio")
        super().__init__(in_dim, num_classes, frames, dropout, dim, grid, flow, **fusion)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(flow, num_classes)

    def pool(self, feats):
        return _tokens(feats)[:, :, 0, -self.flow :].mean(dim=1)  # (B, C): the clip's mean flow cues


def motion_summary(feats: torch.Tensor) -> torch.Tensor:
    """Appearance-free motion cues per frame from frozen tokens: ``(B, T, G, D)`` -> ``(B, T, G + G*G)``.

    * energy: each cell's feature norm over the clip's mean norm. An object moving from the left
      cells to the right ones, growing, or fading in shows up here whatever it looks like;
    * correlation: cosine similarity of every cell of frame ``t`` with every cell of frame ``t + 1``
      (clip-mean removed), a coarse cost volume as in correlation networks: where content went.

    Frozen features are dominated by what objects look like; a head trained on a few clips latches
    onto that and overfits. These ``G + G^2`` numbers per frame say only how things change.
    """
    x = _tokens(feats).float()
    norm = x.norm(dim=-1)  # (B, T, G)
    energy = norm / norm.mean(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    xc = F.normalize(x - x.mean(dim=(1, 2), keepdim=True), dim=-1)
    corr = torch.einsum("btgd,bthd->btgh", xc[:, :-1], xc[:, 1:]).flatten(2)  # (B, T-1, G*G)
    corr = torch.cat([corr, torch.zeros_like(corr[:, :1])], dim=1)  # the last frame has no successor
    return torch.cat([energy, corr], dim=-1).to(feats.dtype)


class _SpaceTimeTokens(nn.Module):
    """``LN(W x) + p_time + p_space``: projected tokens that know when and where they are, plus (with
    ``motion``) one token per frame of :func:`motion_summary` cues, ``LN(W' m) + p_time``."""

    def __init__(self, in_dim: int, dim: int, frames: int, grid: int, motion: bool = True,
                 appearance_drop: float = 0.5, flow: int = 0):
        super().__init__()
        self.flow = flow
        if flow:  # one token per frame from its optical-flow cues
            self.flow_proj = nn.Sequential(nn.Linear(flow, dim), nn.LayerNorm(dim))
            self.ftype = nn.Parameter(torch.zeros(dim))
            nn.init.trunc_normal_(self.ftype, std=0.02)
        self.appearance_drop = appearance_drop
        self.proj = nn.Linear(in_dim, dim)
        self.norm_in = nn.LayerNorm(dim)
        self.pos = nn.Parameter(torch.zeros(frames, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        g = grid * grid
        if grid > 1:
            self.spos = nn.Parameter(torch.zeros(g, dim))
            nn.init.trunc_normal_(self.spos, std=0.02)
        if motion:
            self.motion = nn.Sequential(nn.Linear(g + g * g, dim), nn.LayerNorm(dim))
            self.mtype = nn.Parameter(torch.zeros(dim))  # tells motion tokens from appearance ones
            nn.init.trunc_normal_(self.mtype, std=0.02)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # -> (B, T * G [+ T] [+ T], E)
        flow = None
        if self.flow:
            flow = _tokens(feats)[:, :, 0, -self.flow :]  # (B, T, C)
            feats = feats[..., : -self.flow]
        x = _tokens(feats)
        b, t, g, _ = x.shape
        pos = _resample_positions(self.pos, t)
        tokens = self.norm_in(self.proj(x)) + pos[None, :, None]
        if hasattr(self, "spos"):
            if self.spos.shape[0] != g:
                raise ValueError(f"head expects {self.spos.shape[0]} spatial tokens per frame, got {g}")
            tokens = tokens + self.spos[None, None]
        tokens = tokens.flatten(1, 2)
        if hasattr(self, "motion") and self.training and self.appearance_drop > 0:
            # modality dropout: some clips train on motion cues alone, so the head cannot get by on
            # memorising what a few training objects look like
            keep = torch.rand(b, 1, 1, device=tokens.device) >= self.appearance_drop
            tokens = tokens * keep
        if hasattr(self, "motion"):
            m = self.motion(motion_summary(x)) + pos[None] + self.mtype  # (B, T, E)
            tokens = torch.cat([tokens, m], dim=1)
        if flow is not None:
            tokens = torch.cat([tokens, self.flow_proj(flow) + pos[None] + self.ftype], dim=1)  # (B, T, E) more
        return tokens


def _resample_positions(pos: torch.Tensor, t: int) -> torch.Tensor:
    """Position embeddings ``(T0, E)`` stretched to ``t`` frames (the clip spans the same time)."""
    if pos.shape[0] == t:
        return pos
    # frames sit at segment centres, so align_corners=False maps centre times exactly
    return F.interpolate(pos.t()[None], size=t, mode="linear", align_corners=False)[0].t()


class _TokenHead(TemporalHead):
    """Shared by heads over space-time (+ motion) tokens: projection, positions, output layers."""

    def __init__(self, in_dim, num_classes, frames, dropout, dim, grid, heads, motion, flow=0, **fusion):
        super().__init__(in_dim, num_classes, frames, dropout, dim, grid, flow, **fusion)
        if dim % heads:
            raise ValueError(f"{self.kind} head width {dim} must be a multiple of its {heads} heads")
        self.tokens = _SpaceTimeTokens(in_dim, dim, frames, grid, motion, flow=flow)
        self.norm_out = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def fused_tokens(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(tokens (B, N, E), audio tokens for late fusion or None)``: with mid fusion the audio
        tokens follow the visual ones in ``tokens``."""
        feats, audio = self.split_audio(feats)
        tokens = self.tokens(feats)  # (B, T * G [+ T] [+ T], E)
        if audio is not None and self.fusion == "mid":
            return torch.cat([tokens, audio], dim=1), None  # (B, N + T, E)
        return tokens, audio


@register_head("attention")
class AttentionHead(_TokenHead):
    """Attention pooling with a learned query over space-time and motion tokens.

    Tokens carry temporal (and spatial) position embeddings, so the pooled vector depends on which
    frame came when, not only on the set of frames (a mean cannot tell "opening" from "closing").
    Projecting to ``dim`` keeps the head small enough for few-shot training on frozen features.
    """

    def __init__(self, in_dim, num_classes, frames, dropout=0.2, dim=256, grid=1, heads=4, motion=True, flow=0,
                 **fusion):
        super().__init__(in_dim, num_classes, frames, dropout, dim, grid, heads, motion, flow, **fusion)
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)

    def pool(self, feats):
        tokens, audio = self.fused_tokens(feats)  # (B, T * G, E)
        query = self.query.expand(tokens.shape[0], -1, -1)
        pooled, weights = self.attn(query, tokens, tokens, need_weights=not self.training)
        self.last_weights = None if weights is None else weights.detach()  # (B, 1, T*G): what it looked at
        return self.with_sound(self.norm_out(pooled[:, 0]), audio)  # (B, E [+ E])


@register_head("transformer")
class TransformerHead(_TokenHead):
    """A small pre-norm transformer over space-time tokens with a class token (ViViT's late fusion).

    Self-attention between tokens lets it compare frames (where was the object before, where is it
    now), which a single attention query cannot; ``depth`` 1-2 keeps it trainable from a few dozen
    clips on frozen features.
    """

    def __init__(self, in_dim, num_classes, frames, dropout=0.2, dim=256, grid=1, heads=4, depth=2, motion=True,
                 flow=0, **fusion):
        super().__init__(in_dim, num_classes, frames, dropout, dim, grid, heads, motion, flow, **fusion)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.1, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def pool(self, feats):
        tokens, audio = self.fused_tokens(feats)  # (B, T * G, E)
        x = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)  # (B, 1 + T * G, E)
        return self.with_sound(self.norm_out(self.blocks(x)[:, 0]), audio)  # (B, E [+ E])


def create_head(kind: str, in_dim: int, num_classes: int, frames: int, **kwargs) -> TemporalHead:
    """Build a registered head; options it does not take (``depth`` for ``mean``) are ignored."""
    if kind not in TEMPORAL_HEADS:
        raise ValueError(f"unknown temporal head {kind!r}; choose from {', '.join(TEMPORAL_HEADS)}")
    cls = TEMPORAL_HEADS[kind]
    accepted = set(inspect.signature(cls.__init__).parameters) | set(FUSION_OPTIONS)
    return cls(in_dim, num_classes, frames, **{k: v for k, v in kwargs.items() if k in accepted})
