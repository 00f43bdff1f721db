"""The video classifier: a per-frame encoder, a temporal head and (fused runs) an audio encoder, kept
separate for feature caching."""

from __future__ import annotations

import torch
from torch import nn

from vidtune.models.backbones import FrameEncoder
from vidtune.models.heads import TemporalHead


class VideoClassifier(nn.Module):
    def __init__(self, encoder: FrameEncoder, head: TemporalHead, audio=None):
        super().__init__()
        self.encoder = encoder
        self.head = head
        # a fused run's AudioEncoder (vidtune.audio.features): not a module, its weights are not the run's;
        # the head reads its features after the frame features (vidtune.runs.sound)
        self.audio = audio

    def frame_features(self, clips: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` -> ``(B, T, D)``, or ``(B, T, G, D)`` for space-time tokens."""
        b, t = clips.shape[:2]
        x = clips.flatten(0, 1)  # (B*T, C, H, W), each clip's frames contiguous (temporal shift needs it)
        if x.is_cuda or x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        state = getattr(self.encoder, "shift_state", None)
        if state is not None:
            state.frames = t
        y = self.encoder(x)  # (B*T, ...) per frame, or per clip of clip_len frames for video backbones
        return y.view(b, -1, *y.shape[1:])

    def forward(self, clips: torch.Tensor) -> torch.Tensor:  # (B, T, C, H, W) -> (B, K)
        if self.audio is not None:
            raise ValueError("a fused run's head needs the clips' audio features too: use "
                             "vidtune.runs.inference.run_clips, which adds them")
        return self.head(self.frame_features(clips))
