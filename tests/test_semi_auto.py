"""``--temporal auto`` (grouped cross-validation over heads) and ``--unlabeled`` (semi-supervised heads)."""

from __future__ import annotations

import json

import pytest
import torch

from vidtune.data.flow import FLOW_CHANNELS
from vidtune.models.heads import TEMPORAL_HEADS, create_head
from vidtune.train.auto import choose
from vidtune.train.config import TrainConfig
from vidtune.train.task import Task

LABELS = ["a", "b", "c", "d"]
D = 16


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(head_dim=16, depth=1, min_steps=120, batch_size=8, lr=5e-3, workers=0, **kw).resolved("cpu")


def _task() -> Task:
    return Task(False, LABELS, None, 0.1)


def _synthetic(kind: str, per_class: int = 6, frames: int = 4, seed: int = 0):
    """Features ``(N, T, D + flow)``: ``appearance`` tasks carry the class in the frame features (flow is
    noise); ``motion`` tasks in the flow cues, while the frame features only say which source photo
    the clip shows (every photo appears under every class, as in the camera-motion task)."""
    g = torch.Generator().manual_seed(seed)
    k = len(LABELS)
    protos = torch.randn(k, D, generator=g) * 4
    flows = torch.randn(k, FLOW_CHANNELS, generator=g) * 4
    photos = torch.randn(per_class, D, generator=g) * 3
    xs, ys, groups = [], [], []
    for c in range(k):
        for i in range(per_class):
            app = torch.randn(frames, D, generator=g)
            flo = torch.randn(frames, FLOW_CHANNELS, generator=g)
            if kind == "appearance":
                app = app + protos[c]
                groups.append(f"clip{c}-{i}")
            else:
                app = app + photos[i]
                flo = flo + flows[c]
                groups.append(f"photo{i}")
            xs.append(torch.cat([app, flo], dim=-1))
            ys.append(c)
    return torch.stack(xs), torch.tensor(ys), groups


@pytest.mark.parametrize("kind", ["appearance", "motion"])
def test_auto_picks_mean_for_appearance_and_an_order_aware_head_for_motion(kind):
    x, y, groups = _synthetic(kind)
    report = choose(x, y, groups, _task(), _cfg(seed=0), torch.device("cpu"), D, FLOW_CHANNELS, 1)
    names = [r["name"] for r in report["candidates"]]
    assert names[0] == "flow_linear" and "mean" in names and "attention+flow" in names
    chosen = report["chosen"]
    tried = [r for r in report["candidates"] if r["tried"]]
    assert tried and all(0.0 <= r["score"] <= 1.0 for r in tried)
    if kind == "appearance":
        assert chosen == "mean", report
    else:
        assert TEMPORAL_HEADS[next(r["temporal"] for r in report["candidates"] if r["name"] == chosen)].order_aware
        assert chosen != "mean", report
    best = max(r["score"] for r in tried)
    winner = next(r for r in report["candidates"] if r["name"] == chosen)
    assert winner["score"] >= best - winner["se"] - 1e-6  # never more than noise below the best


def test_flow_linear_head_reads_only_the_flow_cues():
    head = create_head("flow_linear", 8, 3, frames=4, flow=FLOW_CHANNELS).eval()
    x = torch.randn(2, 4, 8 + FLOW_CHANNELS)
    y = x.clone()
    y[..., :8] = torch.randn(2, 4, 8) * 100  # other appearance: same logits
    with torch.no_grad():
        torch.testing.assert_close(head(x), head(y))
        assert not torch.allclose(head(x), head(-x))  # reversed motion: other logits
    assert head.order_aware
    with pytest.raises(ValueError):
        create_head("flow_linear", 8, 3, frames=4)
