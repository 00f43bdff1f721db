"""Temporal models: heads over frame vectors and space-time tokens, the temporal shift, --init."""

from __future__ import annotations

import json

import pytest
import torch

from vidtune.models import VideoClassifier, create_backbone, create_head
from vidtune.models.temporal_shift import add_temporal_shift, residual_branches, temporal_shift
from vidtune.runs.config import ModelSpec
from vidtune.runs.store import assemble

HEADS = ("mean", "attention", "transformer")


@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("grid", [1, 2])
def test_head_shapes_and_gradients(kind, grid):
    torch.manual_seed(0)
    head = create_head(kind, 32, 5, frames=4, dim=16, grid=grid, depth=1)
    x = torch.randn(3, 4, 32, requires_grad=True) if grid == 1 else torch.randn(3, 4, grid * grid, 32, requires_grad=True)
    logits = head(x)
    assert logits.shape == (3, 5)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    trainable = [p for p in head.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable), [n for n, p in head.named_parameters() if p.grad is None]
    assert head.pool(x).shape[0] == 3


def _reversed_differs(model_fn, x) -> bool:
    with torch.no_grad():
        return not torch.allclose(model_fn(x), model_fn(x.flip(1)), atol=1e-4)


@pytest.mark.parametrize("grid", [1, 2])
def test_mean_ignores_frame_order_and_the_others_do_not(grid):
    torch.manual_seed(0)
    shape = (2, 8, 32) if grid == 1 else (2, 8, grid * grid, 32)
    x = torch.randn(*shape)
    mean = create_head("mean", 32, 3, frames=8, grid=grid).eval()
    assert not _reversed_differs(mean, x)
    for kind in ("attention", "transformer"):
        head = create_head(kind, 32, 3, frames=8, dim=16, grid=grid).eval()
        with torch.no_grad():
            head.tokens.pos.normal_(0, 1.0)  # trained positions are not ~0 like at init
        assert _reversed_differs(head, x), kind


def test_space_time_tokens_from_the_feature_map():
    enc = create_backbone("test_efficientnet", pretrained=False).eval()
    s = enc.cfg.input_size
    x = torch.randn(2, 3, s, s)
    with torch.no_grad():
        pooled = enc(x)
        enc.set_grid(2)
        tokens = enc(x)
    assert tokens.shape == (2, 4, enc.num_features)
    fp_tokens = enc.fingerprint()
    enc.set_grid(1)
    assert enc.fingerprint() != fp_tokens  # tokens never reuse cached vectors
    # 2x2 average pools of the map average back to (about) the global pool
    torch.testing.assert_close(tokens.mean(1), pooled, atol=0.05, rtol=0.05)


def test_temporal_shift_moves_exactly_the_intended_channels():
    b, t, c, h, w = 2, 4, 16, 3, 3
    x = torch.arange(b * t * c * h * w, dtype=torch.float32).view(b * t, c, h, w)
    y = temporal_shift(x, t, fold_div=8).view(b, t, c, h, w)
    x5 = x.view(b, t, c, h, w)
    fold = c // 8  # 2 channels each way
    torch.testing.assert_close(y[:, :-1, :fold], x5[:, 1:, :fold])  # these look one frame ahead
    assert (y[:, -1, :fold] == 0).all()  # nothing after the last frame (clips never leak into each other)
    torch.testing.assert_close(y[:, 1:, fold : 2 * fold], x5[:, :-1, fold : 2 * fold])  # one frame back
    assert (y[:, 0, fold : 2 * fold] == 0).all()
    torch.testing.assert_close(y[:, :, 2 * fold :], x5[:, :, 2 * fold :])  # the rest untouched
    with pytest.raises(ValueError):
        temporal_shift(x[:7], t)


def _tsm_model(frames=4, within=None):
    enc = create_backbone("test_resnet", pretrained=False)
    with torch.no_grad():  # timm zero-inits each block's last BN, which would silence the residual branch
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    blocks = add_temporal_shift(enc, frames, 8, within=within)
    return VideoClassifier(enc, create_head("mean", enc.num_features, 3, frames=frames)).eval(), blocks


def test_tsm_is_order_aware_and_trains_end_to_end():
    torch.manual_seed(0)
    model, blocks = _tsm_model()
    assert blocks and not model.encoder.frame_independent
    s = model.encoder.cfg.input_size
    x = torch.randn(2, 4, 3, s, s)
    assert _reversed_differs(model, x)
    plain = VideoClassifier(create_backbone("test_resnet", pretrained=False),
                            create_head("mean", model.encoder.num_features, 3, frames=4)).eval()
    plain.load_state_dict(model.state_dict())  # shifts are hooks: same weight names
    assert not _reversed_differs(plain, x)
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)


def test_tsm_only_shifts_trainable_stages_when_asked():
    enc = create_backbone("efficientnet_lite0", pretrained=False)
    top = enc.stages()[-2:]
    every = set(residual_branches(enc.model))
    some = add_temporal_shift(enc, 4, 8, within=[m for g in top for m in g])
    assert set(some) < every and some


def test_assemble_rebuilds_a_saved_tsm_and_token_model():
    enc = create_backbone("test_resnet", pretrained=False)
    blocks = add_temporal_shift(enc, 4, 8)
    cfg = ModelSpec(backbone="test_resnet", temporal="tsm", frames=4, grid=1,
                    tsm={"fold_div": 8, "blocks": blocks}, head={})
    model = assemble(enc, cfg, 3, shift=False).eval()
    again = assemble(create_backbone("test_resnet", pretrained=False), cfg, 3).eval()
    again.load_state_dict(model.state_dict())
    s = enc.cfg.input_size
    x = torch.randn(1, 4, 3, s, s)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    x = x[..., :64, :64]
    tok = assemble(create_backbone("test_efficientnet", pretrained=False),
                   ModelSpec(backbone="test_efficientnet", temporal="transformer", frames=4, grid=2,
                             head={"dim": 16, "depth": 1}), 3)
    assert tok(x).shape == (1, 3)


# -- training end to end through the CLI ------------------------------------------------------------
TINY = ["--no-pretrained", "--frames", "3", "--epochs", "2", "--workers", "0", "-q", "--json"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from vidtune.data.sample import write_sample_dataset

    root = tmp_path_factory.mktemp("temporal")
    write_sample_dataset(root / "a", classes=3, per_class=5, seconds=1.0, fps=8, size=(64, 48), seed=0)
    return root / "a"


def _train(capsys, *argv):
    import json

    from vidtune.cli.main import main

    code = main([str(a) for a in ("train", *argv, *TINY)])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def _config(run):
    import json

    return json.loads((run / "config.json").read_text())


def test_transformer_on_space_time_tokens_trains_from_cached_features(capsys, tiny_data, tmp_path):
    from vidtune.runs.store import load_run

    _train(capsys, tiny_data, "--out", tmp_path / "run", "--backbone", "test_efficientnet",
           "--temporal", "transformer", "--grid", "2", "--depth", "1", "--head-dim", "32")
    cfg = _config(tmp_path / "run")
    assert cfg["model"]["grid"] == 2 and cfg["model"]["temporal"] == "transformer"
    assert cfg["train"]["strategy"] == "linear"
    model, _ = load_run(tmp_path / "run")
    assert model.encoder.grid == 2
    from vidtune.cli.main import main

    assert main(["eval", str(tmp_path / "run"), str(tiny_data), "--split", "all", "--workers", "0", "-q"]) == 0


def test_tsm_falls_back_to_end_to_end_training(capsys, tiny_data, tmp_path):
    res = _train(capsys, tiny_data, "--out", tmp_path / "tsm", "--backbone", "test_resnet", "--temporal", "tsm",
                 "--unfreeze", "5", "--batch-size", "4", "--accumulate", "2")
    cfg = _config(tmp_path / "tsm")
    assert cfg["train"]["strategy"] == "partial"  # auto: tsm has no frozen-feature path
    assert cfg["model"]["tsm"]["blocks"]
    assert res["epochs_run"] == 2
    from vidtune.cli.main import main

    assert main(["eval", str(tmp_path / "tsm"), str(tiny_data), "--split", "all", "--workers", "0", "-q"]) == 0
    code = main(["train", str(tiny_data), "--out", str(tmp_path / "bad"), "--temporal", "tsm",
                 "--strategy", "linear", *TINY])
    assert code == 2 and "end to end" in capsys.readouterr().err


def test_init_carries_weights_and_maps_a_different_label_set(capsys, tiny_data, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from vidtune.train.build import _build_from_run
    from vidtune.train.config import TrainConfig

    _train(capsys, tiny_data, "--out", tmp_path / "src", "--backbone", "test_efficientnet",
           "--temporal", "attention", "--head-dim", "32")
    src_labels = _config(tmp_path / "src")["labels"]
    src = load_file(str(tmp_path / "src" / "model.safetensors"))
    # target: one label shared, one renamed, one new
    target = tmp_path / "target"
    shutil.copytree(tiny_data, target)
    (target / src_labels[1]).rename(target / "novel")
    labels = sorted([src_labels[0], "novel", src_labels[2]])
    model, model_cfg, lineage = _build_from_run(TrainConfig(init=str(tmp_path / "src"), frames=3), labels)
    state = model.state_dict()
    for k, v in src.items():
        if k.startswith("encoder.") or (k.startswith("head.") and not k.startswith("head.fc.")):
            torch.testing.assert_close(state[k], v, msg=k)
    for lab in (src_labels[0], src_labels[2]):  # shared labels keep their classifier rows
        torch.testing.assert_close(state["head.fc.weight"][labels.index(lab)], src["head.fc.weight"][src_labels.index(lab)])
    new_row = state["head.fc.weight"][labels.index("novel")]
    assert not any(torch.allclose(new_row, r) for r in src["head.fc.weight"])
    assert lineage["labels"] == src_labels and lineage["run_id"] == _config(tmp_path / "src")["run_id"]

    # through the CLI: the frozen backbone is carried unchanged and the lineage is recorded
    _train(capsys, target, "--out", tmp_path / "dst", "--init", tmp_path / "src")
    cfg = _config(tmp_path / "dst")
    assert cfg["model"]["temporal"] == "attention" and cfg["labels"] == labels
    assert cfg["lineage"]["init"] == str(tmp_path / "src") and cfg["lineage"]["data"]["source"] == str(tiny_data)
    dst = load_file(str(tmp_path / "dst" / "model.safetensors"))
    for k, v in src.items():
        if k.startswith("encoder."):
            torch.testing.assert_close(dst[k], v, msg=k)
    from vidtune.cli.main import main

    assert main(["eval", str(tmp_path / "dst"), str(target), "--split", "all", "--workers", "0", "-q"]) == 0


def test_shots_pick_k_per_class_nested_and_seeded():
    from vidtune.data.manifest import VideoItem
    from vidtune.data.splits import few_shot

    items = [VideoItem(path=f"/v/{c}{i}.mp4", label=c) for c in "abc" for i in range(10)]
    two, four = few_shot(items, 2, 0), few_shot(items, 4, 0)
    assert sorted(it.label for it in two) == list("aabbcc")
    assert {it.path for it in two} < {it.path for it in four}
    assert few_shot(list(reversed(items)), 4, 0) == four
    assert few_shot(items, 4, 1) != four
    assert len(few_shot(items, 50, 0)) == 30


# -- torchvision video backbones ----------------------------------------------------------------------
def test_clip_sampling_takes_consecutive_frames_at_the_weights_rate():
    import numpy as np

    from vidtune.runs.features import Sampling

    s = Sampling(2, "centre", clip_len=4, step=0.1)
    ts = s.timestamps(4.0, None, None)
    assert ts.shape == (8,) and s.per_clip == 8
    np.testing.assert_allclose(ts.reshape(2, 4), [[0.85, 0.95, 1.05, 1.15], [2.85, 2.95, 3.05, 3.15]], atol=1e-9)
    edge = Sampling(1, "centre", clip_len=16, step=1 / 15).timestamps(0.5, None, None)  # clip longer than video
    assert edge.min() >= 0 and edge.max() < 0.5 and (np.diff(edge) >= 0).all()
    grid = Sampling(2, "grid", views=3, clip_len=4, step=0.1).timestamps(6.0, None, None)
    assert grid.shape == (2 * 3 * 4,)


def test_video_backbone_from_a_local_weights_file_trains_and_evaluates(capsys, tmp_path):
    import torchvision
    from safetensors.torch import save_file

    from vidtune.data.sample import write_sample_dataset
    from vidtune.models.backbones import ClipEncoder

    torch.manual_seed(0)
    src = torchvision.models.get_model("mc3_18", weights=None)  # what KINETICS400_V1 would hold, offline
    weights = tmp_path / "mc3_18_k400.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(weights))
    enc = create_backbone("mc3_18", weights=weights)
    assert isinstance(enc, ClipEncoder) and (enc.clip_len, enc.clip_fps) == (16, 15.0)
    assert enc.cfg.input_size == 112 and enc.cfg.resize_size == 128
    torch.testing.assert_close(enc.model.layer1[0].conv1[0].weight, src.layer1[0].conv1[0].weight)
    x = torch.randn(2 * 16, 3, 112, 112)
    with torch.no_grad():
        assert enc.eval()(x).shape == (2, 512)

    data = tmp_path / "data"
    write_sample_dataset(data, classes=2, per_class=3, seconds=1.0, fps=8, size=(64, 48), seed=0)
    _train(capsys, data, "--out", tmp_path / "run", "--backbone", "mc3_18", "--weights", weights,
           "--frames", "1", "--views", "1", "--val-split", "0")
    cfg = _config(tmp_path / "run")
    assert cfg["model"]["backbone"] == "mc3_18"
    from vidtune.cli.main import main

    assert main(["predict", str(tmp_path / "run"), str(data), "--workers", "0", "-q"]) == 0


def test_motion_cues_ignore_appearance_and_see_direction():
    from vidtune.models.heads import motion_summary

    torch.manual_seed(0)
    # an "object" feature vector moving across a 2x2 grid, left cells to right cells, on a background
    obj, bg = torch.randn(64).abs() * 3, torch.randn(64).abs()
    def clip(path):
        x = bg.repeat(len(path), 4, 1).clone()  # (T, G, D)
        for t, cell in enumerate(path):
            x[t, cell] = obj
        return x[None]
    right = clip([0, 0, 1, 1])
    left = clip([1, 1, 0, 0])
    m_right, m_left = motion_summary(right), motion_summary(left)
    assert m_right.shape == (1, 4, 4 + 16)
    assert not torch.allclose(m_right, m_left)
    # what the object looks like does not matter: another object with the same path gives the same cues
    perm = torch.randperm(64)
    other = clip([0, 0, 1, 1])[..., perm] * 2.0
    torch.testing.assert_close(motion_summary(other), m_right)


@pytest.mark.slow
def test_order_aware_head_beats_mean_on_the_motion_task(capsys, tmp_path):
    """End to end on real encoded clips with the real frozen backbone: left vs right differ only in
    frame order, so mean pooling is at chance while the transformer head learns the direction."""
    from vidtune.cli.main import main
    from vidtune.data.sample import write_sample_dataset

    write_sample_dataset(tmp_path / "train", classes=2, per_class=12, seed=0, kind="motion")
    write_sample_dataset(tmp_path / "test", classes=2, per_class=10, seed=1, kind="motion")
    top1 = {}
    for head in ("mean", "transformer"):
        # one 3x3 token cache serves both heads (mean averages the cells: a pooled vector)
        args = ["train", tmp_path / "train", "--out", tmp_path / head, "--temporal", head, "--grid", "3",
                "--val-split", "0", "--epochs", "60", "--augment", "none", "--workers", "1", "-q"]
        assert main([str(a) for a in args]) == 0
        capsys.readouterr()
        assert main(["eval", str(tmp_path / head), str(tmp_path / "test"), "--workers", "1", "-q", "--json"]) == 0
        top1[head] = json.loads(capsys.readouterr().out)["top1"]
    assert top1["mean"] <= 0.7, top1  # chance is 0.5
    assert top1["transformer"] >= 0.85 and top1["transformer"] >= top1["mean"] + 0.25, top1
