"""Feature cache: keys depend on everything the features depend on; damage and full disks are survivable."""

import os

import torch

from vidtune.data.manifest import VideoItem
from vidtune.models import create_backbone
from vidtune.models.backbones import PretrainedConfig
from vidtune.runs.features import FeatureCache, Sampling, cache_key, extract_features


def test_cache_key_changes_with_every_input(tmp_path):
    cfg = PretrainedConfig()
    item = VideoItem(tmp_path / "a.mp4", "x")
    base = cache_key(item, "d1", "fp1", cfg, Sampling(8, "centre"))
    variants = [
        cache_key(item, "d2", "fp1", cfg, Sampling(8, "centre")),  # content
        cache_key(item, "d1", "fp2", cfg, Sampling(8, "centre")),  # backbone weights
        cache_key(item, "d1", "fp1", PretrainedConfig(input_size=256), Sampling(8, "centre")),  # transform
        cache_key(item, "d1", "fp1", cfg, Sampling(4, "centre")),  # frames
        cache_key(item, "d1", "fp1", cfg, Sampling(8, "grid", 3)),  # sampling mode / views
        cache_key(VideoItem(item.path, "x", start=1.0), "d1", "fp1", cfg, Sampling(8, "centre")),  # segment
        cache_key(item, "d1", "fp1", cfg, Sampling(8, "centre"), precision="bf16"),  # arithmetic
    ]
    assert len({base, *variants}) == len(variants) + 1
    # what features do not depend on does not matter: the label, the path (content hash instead)
    assert cache_key(VideoItem(tmp_path / "b.mp4", "y"), "d1", "fp1", cfg, Sampling(8, "centre")) == base


def test_digest_is_remembered_by_stat_and_follows_content(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    f = tmp_path / "v.bin"
    f.write_bytes(os.urandom(100_000))
    d1 = cache.digest(f)
    assert FeatureCache(tmp_path / "cache").digest(f) == d1  # from the index, in a new process too
    os.utime(f, ns=(10**9, 10**9))
    assert cache.digest(f) == d1  # touched, same bytes
    f.write_bytes(os.urandom(100_000))
    assert cache.digest(f) != d1


def test_damaged_entry_is_recomputed_and_unwritable_cache_only_warns(tmp_path, caplog):
    from tests.videos import write_indexed_video

    video = write_indexed_video(tmp_path / "v.mp4", 20, h=48, w=64)
    enc = create_backbone("test_efficientnet", pretrained=False)
    cache = FeatureCache(tmp_path / "cache")
    items = [VideoItem(video, "x")]
    feats, skipped = extract_features(enc, items, Sampling(2), device=torch.device("cpu"), cache=cache, workers=0)
    assert not skipped and feats[0].shape == (2, 1, enc.num_features)
    entries = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(entries) == 1
    entries[0].write_bytes(b"garbage")
    again, _ = extract_features(enc, items, Sampling(2), device=torch.device("cpu"), cache=cache, workers=0)
    torch.testing.assert_close(again[0], feats[0])

    blocked = FeatureCache(tmp_path / "blocked")
    (tmp_path / "blocked").mkdir()
    for sub in [f"{i:02x}" for i in range(256)]:  # every shard folder name is taken by a file
        (tmp_path / "blocked" / sub).write_text("")
    out, skipped = extract_features(enc, items, Sampling(2), device=torch.device("cpu"), cache=blocked, workers=0)
    assert not skipped and 0 in out
    assert "not writable" in caplog.text
