"""Splits by class and by group: one source never on both sides (property tests)."""

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from vidtune.data.manifest import VideoItem, load_dataset
from vidtune.data.splits import few_shot, stratified_split


def _items(spec):
    """``spec``: (group, label, n clips) rows -> n clips of a file of that group (one file per row)."""
    items = {}
    for g, label, n in spec:
        for k in range(n):
            it = VideoItem(path=Path(f"/v/{g}_{label}.mp4"), label=label, start=float(k), end=k + 1.0, group=str(g))
            items[it.key()] = it  # the manifest loader drops repeated rows too
    return list(items.values())


groups_st = st.lists(st.tuples(st.integers(0, 9), st.sampled_from("abc"), st.integers(1, 4)), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(spec=groups_st, frac=st.sampled_from([0.0, 0.2, 0.5]), seed=st.integers(0, 3))
def test_a_group_never_sits_on_both_sides(spec, frac, seed):
    items = _items(spec)
    s = stratified_split(items, frac, seed)
    train_groups = {it.group_key() for it in s["train"]}
    val_groups = {it.group_key() for it in s["val"]}
    assert not train_groups & val_groups
    assert sorted(map(VideoItem.sort_key, s["train"] + s["val"])) == sorted(map(VideoItem.sort_key, items))
    groups_of = {c: {it.group_key() for it in items if it.label == c} for c in {it.label for it in items}}
    for label, groups in groups_of.items():
        assert any(it.label == label for it in s["train"]), "every class keeps training clips"
        # a group can go to validation when every class in it has another group left for training
        free = [g for g in groups if all(len(groups_of[c]) >= 2 for c in groups_of if g in groups_of[c])]
        if frac and len(groups) >= 2 and len(free) == len(groups):
            assert any(it.label == label for it in s["val"]), "a class with 2+ free sources gets validation"
    assert s == stratified_split(list(reversed(items)), frac, seed)  # order of rows does not matter


def test_every_class_in_every_group_still_gets_validation():
    """Camera motion over photos: each photo (group) appears under every label."""
    items = [VideoItem(path=Path(f"/v/{p}_{c}.mp4"), label=c, group=f"photo{p}")
             for p in range(10) for c in ("zoom_in", "zoom_out", "fade_in", "fade_out")]
    s = stratified_split(items, 0.2, 0)
    assert {it.group for it in s["train"]}.isdisjoint({it.group for it in s["val"]})
    assert len({it.group for it in s["val"]}) == 2 and len(s["val"]) == 8
    assert {it.label for it in s["val"]} == {"zoom_in", "zoom_out", "fade_in", "fade_out"}


def test_single_clip_groups_keep_the_plain_per_class_split():
    items = [VideoItem(path=Path(f"/v/{c}{i}.mp4"), label=c) for c in "ab" for i in range(10)]
    s = stratified_split(items, 0.2, 0)
    assert sorted(it.label for it in s["val"]) == ["a", "a", "b", "b"]


def test_manifest_group_column_and_whole_file_plus_segment_rows(tmp_path):
    (tmp_path / "m.csv").write_text(
        "path,label,group,start,end\n"
        "a.mp4,x,,,\n"          # the whole file ...
        "a.mp4,x,,0,1\n"        # ... and a segment of it: one group (the file), no crash sorting None
        "b.mp4,y,scene1,,\n"
        "c.mp4,y,scene1,,\n"    # two files, one declared group
        "d.mp4,x,,,\n"
        "e.mp4,y,,,\n", encoding="utf-8")
    items = load_dataset(tmp_path / "m.csv")
    assert {it.group for it in items} == {None, "scene1"}
    for seed in range(5):
        s = stratified_split(items, 0.5, seed)
        sides = {it.group_key(): name for name in ("train", "val") for it in s[name]}
        assert len(sides) == 4  # a.mp4, scene1, d.mp4, e.mp4
        for name in ("train", "val"):
            for it in s[name]:
                assert sides[it.group_key()] == name


def test_few_shot_spreads_over_sources_and_is_nested():
    items = [VideoItem(path=Path(f"/v/{g}.mp4"), label=c, start=float(k), end=k + 1.0)
             for c in "ab" for g in (f"{c}{i}" for i in range(4)) for k in range(5)]
    two, four, eight = (few_shot(items, k, 0) for k in (2, 4, 8))
    assert set(map(VideoItem.sort_key, two)) <= set(map(VideoItem.sort_key, four)) <= set(map(VideoItem.sort_key, eight))
    for label in "ab":
        assert len({it.group_key() for it in four if it.label == label}) == 4  # four sources, not four cuts of one
    assert few_shot(list(reversed(items)), 4, 0) == four
