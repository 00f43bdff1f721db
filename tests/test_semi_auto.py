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


# -- --unlabeled -----------------------------------------------------------------------------------
def _clips(points: torch.Tensor, frames: int, g: torch.Generator, noise: float = 0.05) -> torch.Tensor:
    """``(N, 2)`` points -> clips ``(N, T, 8)``: the point in the first two channels of every frame."""
    x = torch.zeros(len(points), frames, 8)
    x[:, :, :2] = points[:, None]
    return x + noise * torch.randn(x.shape, generator=g)


def _semi(x_lab, y_lab, x_va, y_va, x_pool, semi="auto"):
    from vidtune.data.manifest import VideoItem
    from vidtune.progress import NullProgress
    from vidtune.train.auto import HeadOnly
    from vidtune.train.linear import LinearStrategy
    from vidtune.train.semi import semi_fit

    task = Task(False, ["a", "b"], None, 0.1)
    cfg = TrainConfig(min_steps=150, batch_size=8, lr=1e-2, augment="none", workers=0, semi=semi).resolved("cpu")
    torch.manual_seed(0)
    head = create_head("mean", 8, 2, frames=x_lab.shape[1])
    s = LinearStrategy.from_tensors(HeadOnly(head), task, cfg, torch.device("cpu"), NullProgress(),
                                    x_lab[:, :, None], y_lab, x_va, y_va, views=1)
    init = {k: v.clone() for k, v in head.state_dict().items()}
    base = s.fit()
    base_logits = base.val_logits.clone()
    pool_items = [VideoItem(path=f"/pool/{i}.mp4", label="") for i in range(len(x_pool))]
    fit, report = semi_fit(s, init, base, x_pool[:, :, None], pool_items)
    head.eval()
    with torch.no_grad():
        now = head(x_va)
    return report, fit, base_logits, now


def _along(n: int, y: float, g: torch.Generator, lo: float = 0.0, hi: float = 10.0) -> torch.Tensor:
    t = lo + (hi - lo) * torch.rand(n, generator=g)
    return torch.stack([t, torch.full((n,), y)], dim=1)


def test_unlabeled_pool_improves_a_head_trained_on_one_clip_per_class():
    """Two long clusters (y = 0 and y = 3 along x in [0, 10]); the one labelled clip of each sits at opposite
    ends, so the head trained on them alone cuts both clusters. The unlabelled pool fills the clusters in."""
    g = torch.Generator().manual_seed(0)
    x_lab = _clips(torch.tensor([[0.0, 0.0], [10.0, 3.0]]), 4, g)
    y_lab = torch.tensor([0, 1])
    va = torch.cat([_along(20, 0.0, g), _along(20, 3.0, g)])
    y_va = torch.tensor([0] * 20 + [1] * 20)
    pool = torch.cat([_along(60, 0.0, g), _along(60, 3.0, g)])
    report, fit, base_logits, now = _semi(x_lab, y_lab, _clips(va, 4, g), y_va, _clips(pool, 4, g))
    base_acc = report["baseline_val"]["mean_class_accuracy"]
    assert base_acc < 0.9, report  # the task is not solved from two clips
    assert report["kept"] in ("pseudo", "propagate"), report
    assert report["semi_val"]["mean_class_accuracy"] >= base_acc + 0.1, report
    assert (now.argmax(1) == y_va).float().mean() == pytest.approx(report["semi_val"]["top1"])
    assert fit.used["unlabeled"] and all(it.label in ("a", "b") for it in fit.used["unlabeled"])


def test_a_pool_that_hurts_is_rejected_and_the_head_without_it_kept():
    """The pool's clips look like class b by where they lie but carry a strong cue (channel 2) that the
    labelled clips of class a have: the head labels them a, and training on them teaches it that cue
    instead of the position validation needs. Validation catches it; the run keeps the baseline head."""
    g = torch.Generator().manual_seed(0)
    x_lab = _clips(torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 6.0], [0.0, 6.0]]), 4, g)
    x_lab[:2, :, 2] = 5.0  # class a's labelled clips have the cue
    y_lab = torch.tensor([0, 0, 1, 1])
    va = torch.cat([_along(20, 0.0, g, 0, 2).flip(1), _along(20, 0.0, g, 4, 6).flip(1)])  # (0..2, 0) / (4..6, 0)
    va = torch.stack([va[:, 1], va[:, 0]], dim=1)
    y_va = torch.tensor([0] * 20 + [1] * 20)
    pool_pts = torch.stack([torch.zeros(80), 4.0 + 2.0 * torch.rand(80, generator=g)], dim=1)  # where b lies
    x_pool = _clips(pool_pts, 4, g)
    x_pool[:, :, 2] = 8.0  # ... with a's cue, stronger
    report, fit, base_logits, now = _semi(x_lab, y_lab, _clips(va, 4, g), y_va, x_pool)
    tried = [c for c in report["candidates"].values() if c["val"] is not None]
    assert tried, report  # the pool was labelled and trained on
    assert report["kept"] == "none", report
    assert all(c["val"]["mean_class_accuracy"] <= report["baseline_val"]["mean_class_accuracy"] for c in tried)
    torch.testing.assert_close(now, base_logits)  # the head is the one trained without the pool
    assert "unlabeled" not in fit.used


# -- end to end: the CLI, the run folder, loading and predicting -------------------------------------
TINY = ["--backbone", "test_efficientnet", "--no-pretrained", "--frames", "4", "--views", "1", "--augment", "none",
        "--workers", "0", "--min-steps", "60", "-q", "--json"]


@pytest.fixture(scope="module")
def motion_data(tmp_path_factory):
    from vidtune.data.sample import write_sample_dataset

    root = tmp_path_factory.mktemp("motion")
    write_sample_dataset(root / "train", kind="motion", classes=2, per_class=6, seconds=1.0, fps=8, size=(96, 80),
                         seed=0)
    write_sample_dataset(root / "pool", kind="motion", classes=2, per_class=6, seconds=1.0, fps=8, size=(96, 80),
                         seed=1)
    return root


def _run_json(capsys, *argv):
    from vidtune.cli.main import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert out.strip(), err
    return code, json.loads(out)


def test_cli_temporal_auto_records_the_candidates_and_the_run_loads_and_predicts(motion_data, tmp_path, capsys):
    from vidtune.runs.store import load_run

    run = tmp_path / "run"
    code, res = _run_json(capsys, "train", motion_data / "train", "--out", run, "--temporal", "auto", *TINY)
    assert code == 0, res
    auto = res["temporal_auto"]
    assert auto["chosen"] in [c["name"] for c in auto["candidates"]] and auto["folds"] >= 2
    assert any(c["tried"] and c["score"] is not None for c in auto["candidates"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["temporal_auto"] == auto
    config = json.loads((run / "config.json").read_text())
    chosen = next(c for c in auto["candidates"] if c["name"] == auto["chosen"])
    assert config["model"]["temporal"] == chosen["temporal"]
    assert bool(config["model"]["head"].get("flow")) == chosen["flow"] or chosen["temporal"] == "flow_linear"
    model, cfg = load_run(run)  # loads like any run
    assert model.head.kind == chosen["temporal"]
    video = sorted((motion_data / "pool").rglob("*.mp4"))[0]
    code, pred = _run_json(capsys, "predict", run, video, "--workers", "0", "-q", "--json")
    assert code == 0 and pred["results"][0]["predictions"][0]["label"] in cfg.labels


def test_cli_unlabeled_records_what_was_kept_and_the_validation_scores(motion_data, tmp_path, capsys):
    run = tmp_path / "run"
    code, res = _run_json(capsys, "train", motion_data / "train", "--out", run, "--temporal", "flow_linear",
                          "--unlabeled", motion_data / "pool", *TINY)
    assert code == 0, res
    semi = res["semi"]
    assert semi["pool"] == 12 and semi["kept"] in ("none", "pseudo", "propagate")
    assert 0.0 <= semi["baseline_val"]["mean_class_accuracy"] <= 1.0
    assert set(semi["candidates"]) == {"pseudo", "propagate"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["semi"]["kept"] == semi["kept"]
    split = json.loads((run / "split.json").read_text())
    assert ("unlabeled" in split) == (semi["kept"] != "none")
    if semi["kept"] != "none":
        assert semi["semi_val"]["mean_class_accuracy"] >= semi["baseline_val"]["mean_class_accuracy"]
    # no validation set: a clear error, exit 2
    code, err = _run_json(capsys, "train", motion_data / "train", "--out", tmp_path / "r2", "--val-split", "0",
                          "--unlabeled", motion_data / "pool", *TINY)
    assert code == 2 and "validation" in err["error"]
