"""Optical-flow cues: direction of real-photo motion, shapes, caching, reversal, and end to end on
camera motion over unseen real photos (scikit-image's, not opencv-doc's)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.videos import write_video
from vidtune.data.flow import FLOW_CHANNELS, FLOW_GRID, clip_flow, flow_descriptor
from vidtune.data.manifest import VideoItem
from vidtune.models import create_backbone
from vidtune.runs.features import FeatureCache, extract_features, sampling_for

G2 = FLOW_GRID * FLOW_GRID


def _photo(h=160, w=160):
    skimage = pytest.importorskip("skimage.data")
    img = skimage.astronaut()  # a real photo (512 x 512)
    return np.ascontiguousarray(img[100 : 100 + h * 2 : 2, 150 : 150 + w * 2 : 2])


def test_flow_reads_direction_zoom_and_fades_on_a_real_photo():
    img = _photo()
    pan = np.stack([np.roll(img, 4 * t, axis=1)[:, 20:140] for t in range(5)])  # content moves right
    d = flow_descriptor(pan)
    assert d.shape == (5, FLOW_CHANNELS) and not d[-1].any()  # the last frame has no successor
    assert (d[:-1, :G2] > 0.3).all() and np.abs(d[:-1, G2 : 2 * G2]).max() < 0.3  # dx > 0, dy ~ 0
    zoom = np.stack([_zoom(img, 1.0 + 0.06 * t) for t in range(5)])  # content grows from the centre
    z = flow_descriptor(zoom)[:-1, :G2].reshape(4, FLOW_GRID, FLOW_GRID)
    assert (z[:, :, 0] < 0).all() and (z[:, :, -1] > 0).all()  # left cells go left, right cells go right
    fade = np.stack([(img * (0.4 + 0.15 * t)).astype(np.uint8) for t in range(5)])
    assert (flow_descriptor(fade)[:-1, -1] > 0).all()


def _zoom(img, s):
    h, w = img.shape[:2]
    ch, cw = int(h / s), int(w / s)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = img[y0 : y0 + ch, x0 : x0 + cw]
    yi = (np.arange(h) * ch / h).astype(int)
    xi = (np.arange(w) * cw / w).astype(int)
    return crop[yi][:, xi]


def test_clip_flow_follows_each_view_in_grid_order():
    img = _photo()
    frames = np.stack([np.roll(img, 3 * t, axis=1) for t in range(4)])
    grid = np.stack([frames, frames[:, :, ::-1]], axis=1).reshape(8, *img.shape)  # (frame, view) order
    f = clip_flow(grid, 4, 2)
    assert f.shape == (4, 2, FLOW_CHANNELS)
    assert (f[:-1, 0, :G2] > 0).all() and (f[:-1, 1, :G2] < 0).all()  # the mirrored view moves left


def test_features_carry_flow_and_cache_it_under_their_own_key(tmp_path):
    img = _photo(64, 200)
    video = write_video(tmp_path / "pan.mp4", [img[:, 80 - t : 176 - t] for t in range(24)], fps=12)
    enc = create_backbone("test_efficientnet", pretrained=False)
    cache = FeatureCache(tmp_path / "cache")
    cpu = torch.device("cpu")
    items = [VideoItem(video, "x")]
    plain, _ = extract_features(enc, items, sampling_for(enc, 4, "grid", 3), device=cpu, cache=cache, workers=0)
    flowed, _ = extract_features(enc, items, sampling_for(enc, 4, "grid", 3, flow=True), device=cpu, cache=cache,
                                 workers=0)
    d = enc.num_features
    assert plain[0].shape == (4, 3, d) and flowed[0].shape == (4, 3, d + FLOW_CHANNELS)
    torch.testing.assert_close(flowed[0][..., :d], plain[0])
    assert (flowed[0][:-1, :, d : d + G2].mean(-1) > 0.15).all()  # the content moves right in every view
    entries = sorted(p.name for p in (tmp_path / "cache").rglob("*.safetensors"))
    assert len(entries) == 2
    enc.set_grid(2)
    tokens, _ = extract_features(enc, items, sampling_for(enc, 4, "centre", flow=True), device=cpu, cache=cache,
                                 workers=0)
    assert tokens[0].shape == (4, 1, 4, d + FLOW_CHANNELS)
    torch.testing.assert_close(tokens[0][:, :, 0, d:], tokens[0][:, :, 3, d:])  # one frame's cues on every token

    import vidtune.runs.features as features

    def no_decode(*a, **k):
        raise AssertionError("decoded although cached")

    original = features.ClipDataset.__getitem__
    features.ClipDataset.__getitem__ = no_decode
    try:
        again, _ = extract_features(enc, items, sampling_for(enc, 4, "centre", flow=True), device=cpu, cache=cache,
                                    workers=0)
    finally:
        features.ClipDataset.__getitem__ = original
    torch.testing.assert_close(again[0], tokens[0])


def test_heads_read_flow_as_their_own_tokens():
    from vidtune.models.heads import create_head

    d = 32
    for kind in ("mean", "attention", "transformer"):
        head = create_head(kind, d, 3, 4, grid=2, dim=16, depth=1, flow=FLOW_CHANNELS).eval()
        x = torch.randn(2, 4, 4, d + FLOW_CHANNELS)
        assert head(x).shape == (2, 3)
        y = x.clone()
        y[..., d:] += 1.0  # other flow, same appearance
        assert not torch.allclose(head(x), head(y)), kind


def test_time_reversal_reverses_flow_too():
    from vidtune.train.task import Task

    task = Task(False, ["a", "b"], None, 0.0)
    task.set_reversal([1, 0], flow=2)
    x = torch.zeros(64, 4, 3 + 2)
    x[..., :3] = torch.arange(4.0)[None, :, None]  # appearance: frame index
    x[:, :3, 3:] = torch.tensor([1.0, -2.0])  # moving right/up between every pair of frames
    y = torch.zeros(64, dtype=torch.long)
    xr, yr = task.time_reverse(x, y, torch.Generator().manual_seed(0))
    flipped = yr == 1
    assert 10 < int(flipped.sum()) < 54
    r = xr[flipped][0]
    assert r[:, 0].tolist() == [3.0, 2.0, 1.0, 0.0]
    assert r[:3, 3:].tolist() == [[-1.0, 2.0]] * 3 and r[3, 3:].tolist() == [0.0, 0.0]


@pytest.mark.slow
def test_flow_head_learns_camera_motion_on_unseen_real_photos(tmp_path, capsys):
    """zoom_in vs zoom_out over scikit-image photos, test photos never seen in training: frames taken
    as a set are the same for both, so averaging frame features stays near chance; a head with
    flow cues reads the direction."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    pytest.importorskip("skimage.data")
    import realworld_data

    from vidtune.cli.main import main

    manifest = realworld_data.camera_motion_small(tmp_path / "data")
    scores = {}
    for name, extra in (("mean", ["--temporal", "mean"]), ("attention+flow", ["--temporal", "attention", "--flow"])):
        run = tmp_path / name
        assert main(["train", str(manifest), "--out", str(run), "--frames", "6", "--augment", "none", "--workers", "1", "-q", "--json",
                     *extra]) == 0
        capsys.readouterr()
        assert main(["eval", str(run), str(manifest), "--workers", "1", "-q", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["n"] == 12 and not out["shared_with_training"]
        scores[name] = out["top1"]
    assert scores["attention+flow"] >= 0.9 and scores["attention+flow"] >= scores["mean"] + 0.3, scores
