"""Training-loop pieces: schedules, balancing, freezing."""
import pickle

import pytest
import torch

from vidtune.models import VideoClassifier, create_backbone, create_head
from vidtune.runs.features import ClipDataset, Sampling, clip_loader
from vidtune.train.config import TrainConfig
from vidtune.train.end_to_end import backbone_param_groups as _backbone_param_groups
from vidtune.train.fitter import lr_lambda as _lr_lambda
from vidtune.train.task import _class_weights, _epoch_order


def test_lr_warmup_then_cosine_to_zero():
    f = _lr_lambda(total_steps=100, warmup_steps=10)
    assert f(0) == 0.01 and abs(f(10) - 1.0) < 1e-9
    assert f(55) < f(20) and f(100) < 1e-9
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def test_class_weights_and_balanced_sampling():
    y = torch.tensor([0] * 90 + [1] * 10)
    w = _class_weights(y, 3)
    assert w[1] / w[0] == 9 and w[2] == 0  # an absent class gets no weight
    order = _epoch_order(y, "sampler", torch.Generator().manual_seed(0))
    frac = (y[order] == 1).float().mean()
    assert 0.35 < frac < 0.65  # classes drawn about equally often
    order = _epoch_order(y, "loss", torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(100))  # a plain permutation


def test_partial_unfreezes_last_stages_and_never_wraps():
    enc = create_backbone("test_efficientnet", pretrained=False)
    model = VideoClassifier(enc, create_head("mean", enc.num_features, 2, frames=2))
    n_stages = len(enc.stages())
    total = sum(p.numel() for p in enc.parameters())

    def trainable(unfreeze):
        groups = _backbone_param_groups(model, TrainConfig(strategy="partial", unfreeze=unfreeze, lr=1.0))
        n = sum(p.numel() for p in enc.parameters() if p.requires_grad)
        assert n == sum(p.numel() for g in groups for p in g["params"])  # every trainable tensor, once
        return n

    counts = [trainable(n) for n in range(n_stages + 3)]
    assert counts[0] == 0
    assert all(a < b for a, b in zip(counts[: n_stages], counts[1 : n_stages + 1]))
    assert counts[n_stages] == counts[n_stages + 2] == total  # asking for more than exist trains all


def test_layer_wise_lr_decay_from_the_top_stage_down():
    enc = create_backbone("test_efficientnet", pretrained=False)
    model = VideoClassifier(enc, create_head("mean", enc.num_features, 2, frames=2))
    cfg = TrainConfig(strategy="full", lr=1.0, backbone_lr_scale=0.1, layer_decay=0.5)
    groups = _backbone_param_groups(model, cfg)
    assert all(p.requires_grad for p in enc.parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in enc.parameters())
    top = [id(p) for p in enc.stages()[-1][0].parameters()]
    bottom = [id(p) for p in enc.stages()[0][0].parameters()]
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    n = len(enc.stages())
    assert {lr_of[i] for i in top} == {0.1}
    assert {lr_of[i] for i in bottom} == {0.1 * 0.5 ** (n - 1)}


def test_loader_works_with_spawned_workers():
    """macOS/Windows start workers with spawn: everything handed to them must pickle."""
    ds = ClipDataset([], Sampling(2), create_backbone("test_efficientnet", pretrained=False).cfg)
    loader = clip_loader(ds, workers=1, batch_size=4, order=[])
    pickle.dumps(loader.collate_fn)
    pickle.dumps(ds)


def test_torchvision_stages_open_up_single_containers():
    import torchvision

    from vidtune.models.backbones import _split_stages, _strip_tv_head

    for name, at_least in (("resnet18", 5), ("mobilenet_v3_small", 8), ("convnext_tiny", 6)):
        model = torchvision.models.get_model(name, weights=None)
        _strip_tv_head(model)
        stages = _split_stages(model)
        total = sum(p.numel() for p in model.parameters())
        last = sum(p.numel() for m in stages[-1] for p in m.parameters())
        assert len(stages) >= at_least, name
        assert 0.01 < last / total < 0.9, name  # the last stage is a real block, not a norm or everything
        assert sum(p.numel() for g in stages for m in g for p in m.parameters()) == total


def test_attention_head_width_is_validated():
    import pytest

    from vidtune.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of 4") as exc:
        TrainConfig(temporal="attention", head_dim=30)
    assert exc.value.field == "head_dim"


def test_facade_train_stays_callable_after_the_subpackage_is_imported(tmp_path):
    import vidtune
    import vidtune.train.trainer  # binds the name vidtune.train to the subpackage

    assert callable(vidtune.train)
    with pytest.raises(vidtune.VidtuneError):
        vidtune.train(tmp_path / "missing", tmp_path / "run")
