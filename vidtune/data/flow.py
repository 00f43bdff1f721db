"""Optical-flow cues: how the picture moves between consecutive sampled frames, whatever it shows.

Frozen ImageNet features say what is in a frame; a head trained on a few clips of each class then
learns which *things* go with which label, and fails on unseen photos or scenes (camera motion over
photos: 0.13-0.30 top-1 for mean/attention heads, bench/realworld.py). Dense optical flow (OpenCV's
DIS) between consecutive sampled frames of a clip, averaged over a ``3 x 3`` grid of cells, says
only how content moves: a pan is a uniform field, a zoom points out of (or into) the centre, a
rotation turns around it. With the change of mean brightness (fades) that is
``2 * 3 * 3 + 1 = 19`` numbers per frame, cached beside the frame features (see
:func:`vidtune.runs.features.extract_features`) and read by the temporal heads as one flow token
per frame. Logistic regression on these numbers alone scored 0.975 on the camera-motion test photos.
"""

from __future__ import annotations

import numpy as np

FLOW_GRID = 3  # cells per side
FLOW_CHANNELS = 2 * FLOW_GRID * FLOW_GRID + 1  # (dx, dy) per cell + brightness change
FLOW_SIZE = 112  # frames are reduced to this side before flow: fast, and enough for coarse motion
# Displacements (fractions of the frame side) and brightness changes are multiplied by this, so that
# real motion between sampled frames has a standard deviation near 1 like the frame features beside
# it (measured on the bench/realworld.py clips: 0.024-0.036 before scaling). Unscaled, a head on
# 1280 appearance channels hardly notices 19 channels of hundredths.
FLOW_SCALE = 30.0
FLOW_ID = f"dis-fast/{FLOW_GRID}x{FLOW_GRID}/{FLOW_SIZE}px/x{FLOW_SCALE:g}"  # in feature-cache keys


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # a dependency of vidtune; only a broken install lacks it
        from vidtune.errors import VidtuneError

        raise VidtuneError(f"optical flow needs OpenCV: pip install opencv-python-headless ({exc})") from None
    return cv2


def flow_descriptor(frames: np.ndarray) -> np.ndarray:
    """``frames`` uint8 ``(T, H, W, 3)`` of one clip in time order -> float32 ``(T, 19)``.

    Row ``t`` describes the motion from frame ``t`` to ``t + 1``: per cell the mean displacement
    ``(dx, dy)`` as a fraction of the frame side (row-major cells, all dx then all dy), then the
    change of mean brightness (a fraction of 255), all times ``FLOW_SCALE``. The last frame has no
    successor: its row is zero.
    """
    cv2 = _cv2()
    t = len(frames)
    out = np.zeros((t, FLOW_CHANNELS), np.float32)
    if t < 2:
        return out
    h, w = frames.shape[1:3]
    scale = FLOW_SIZE / max(h, w)
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    grey = [cv2.resize(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
            for f in frames]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    g = FLOW_GRID
    for i in range(t - 1):
        flow = dis.calc(grey[i], grey[i + 1], None)  # (h', w', 2) pixels
        cells = cv2.resize(flow, (g, g), interpolation=cv2.INTER_AREA)  # (g, g, 2)
        out[i, : g * g] = cells[..., 0].reshape(-1) / size[0]
        out[i, g * g : 2 * g * g] = cells[..., 1].reshape(-1) / size[1]
        out[i, -1] = (float(grey[i + 1].mean()) - float(grey[i].mean())) / 255.0
    return out * FLOW_SCALE


def clip_flow(frames: np.ndarray, frames_per_clip: int, views: int) -> np.ndarray:
    """Flow descriptors of a decoded clip in the feature cache's order: ``frames`` ``(F * V, H, W, 3)``
    position-major (frame 0 views 0..V-1, frame 1, ...) -> ``(F, V, 19)``, each view its own
    sequence of frames."""
    x = frames.reshape(frames_per_clip, views, *frames.shape[1:])
    return np.stack([flow_descriptor(x[:, v]) for v in range(views)], axis=1)
