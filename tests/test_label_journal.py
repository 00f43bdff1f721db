"""The label journal: every acknowledged action survives a crash, the manifest follows it atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vidtune.data.manifest import load_dataset
from vidtune.errors import ConfigError, VidtuneError
from vidtune.labels.journal import (
    Clip,
    JournalError,
    LabelConflictError,
    LabelJournal,
    clip_key,
    journal_path,
)

CLASSES = ("cat", "dog", "bird")


def clip(tmp_path: Path, name: str, start=None, end=None) -> Clip:
    p = tmp_path / "videos" / name
    p.parent.mkdir(exist_ok=True)
    p.touch()
    return Clip(clip_key(p, start, end), str(p), start, end)


def open_journal(tmp_path: Path, classes=CLASSES) -> LabelJournal:
    out = tmp_path / "labels.csv"
    return LabelJournal(journal_path(out), out, classes)


def rows(manifest: Path) -> list[tuple]:
    return [(it.path.name, it.label, it.start, it.end) for it in load_dataset(manifest)]


def test_labels_skips_undo_and_the_manifest(tmp_path):
    a, b, c = clip(tmp_path, "a.mp4", 0.0, 2.0), clip(tmp_path, "a.mp4", 2.0, 4.0), clip(tmp_path, "c.mp4")
    with open_journal(tmp_path) as j:
        j.label(a, "cat")
        j.label(b, "dog")
        j.skip(c)
        assert j.per_class() == {"cat": 1, "dog": 1, "bird": 0}
        assert j.done() == {a.key, b.key, c.key}
        # the manifest is a vidtune manifest `vidtune train` reads, rows in labelling order
        assert rows(tmp_path / "labels.csv") == [("a.mp4", "cat", 0.0, 2.0), ("a.mp4", "dog", 2.0, 4.0)]
        assert (tmp_path / "labels.csv").read_text().splitlines()[1] == "videos/a.mp4,cat,0.0,2.0"
        assert j.undo().op == "skip"  # the latest action first
        assert j.undo().clip == b
        assert rows(tmp_path / "labels.csv") == [("a.mp4", "cat", 0.0, 2.0)]
        assert j.undo(a.key).label == "cat"
        with pytest.raises(LabelConflictError, match="nothing to undo"):
            j.undo()
        assert load_dataset_or_empty(tmp_path / "labels.csv") == []


def load_dataset_or_empty(path: Path) -> list:
    lines = path.read_text().splitlines()
    assert lines == ["path,label,start,end"]
    return []


def test_same_label_again_is_a_retry_another_label_is_a_conflict(tmp_path):
    a = clip(tmp_path, "a.mp4")
    with open_journal(tmp_path) as j:
        first = j.label(a, "cat")
        assert j.label(a, "cat") == first  # a retried request: no second record
        with pytest.raises(LabelConflictError, match="already labelled 'cat'"):
            j.label(a, "dog")
        with pytest.raises(ConfigError, match="must be one of cat, dog, bird"):
            j.label(a, "horse")
        with pytest.raises(LabelConflictError):
            j.skip(a)
    records = journal_path(tmp_path / "labels.csv").read_text().splitlines()
    assert len(records) == 2  # header + one label


def test_reopen_replays_the_state(tmp_path):
    a, b = clip(tmp_path, "a.mp4"), clip(tmp_path, "b.mp4")
    with open_journal(tmp_path) as j:
        j.label(a, "cat")
        j.label(b, "bird")
        j.undo(a.key)
        j.label(a, "dog")
    with open_journal(tmp_path) as j:
        assert [(e.clip.key, e.label) for e in j.labels()] == [(b.key, "bird"), (a.key, "dog")]
        assert j.undo().clip == a  # undo order survives a restart too


def test_a_torn_last_line_is_dropped_and_appends_go_on(tmp_path):
    a, b = clip(tmp_path, "a.mp4"), clip(tmp_path, "b.mp4")
    with open_journal(tmp_path) as j:
        j.label(a, "cat")
    jp = journal_path(tmp_path / "labels.csv")
    good = jp.read_bytes()
    with open(jp, "ab") as fh:  # a crash in the middle of the next write: never acknowledged
        fh.write(b'{"op":"label","key":"lxx","path":"/v/b.mp4","lab')
    with open_journal(tmp_path) as j:
        assert [e.label for e in j.labels()] == ["cat"]
        assert jp.read_bytes() == good  # cut back to the last complete line
        j.label(b, "dog")
    with open_journal(tmp_path) as j:
        assert [e.label for e in j.labels()] == ["cat", "dog"]


def test_a_complete_but_damaged_last_line_is_dropped_one_in_the_middle_is_an_error(tmp_path):
    a, b = clip(tmp_path, "a.mp4"), clip(tmp_path, "b.mp4")
    with open_journal(tmp_path) as j:
        j.label(a, "cat")
        j.label(b, "dog")
    jp = journal_path(tmp_path / "labels.csv")
    lines = jp.read_text().splitlines(keepends=True)
    jp.write_text("".join(lines[:-1]) + lines[-1].replace('"dog"', '"cat"'))  # checksum no longer matches
    with open_journal(tmp_path) as j:
        assert [e.label for e in j.labels()] == ["cat"]
    lines = jp.read_text().splitlines(keepends=True)
    jp.write_text(lines[0] + lines[1].replace('"cat"', '"dog"') + "".join(lines[2:]) +
                  lines[1])  # a damaged line followed by a good one
    with pytest.raises(JournalError, match=r"labels\.csv\.journal:2: damaged line"):
        open_journal(tmp_path)


def test_crash_between_the_manifest_write_and_the_rename_is_repaired(tmp_path, monkeypatch):
    """The journal line is on disk, the manifest's temporary file is written, the process dies before
    ``os.replace``: the next start rewrites the manifest from the journal."""
    a, b = clip(tmp_path, "a.mp4"), clip(tmp_path, "b.mp4")
    with open_journal(tmp_path) as j:
        j.label(a, "cat")
    manifest = tmp_path / "labels.csv"
    before = manifest.read_text()
    # a child process labels b and is killed (SIGKILL) inside os.replace: nothing after the fsync'd
    # journal write and the temporary manifest file happens
    code = f"""
import os, signal, sys
from vidtune.labels.journal import Clip, LabelJournal, journal_path
os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
j = LabelJournal(journal_path({str(manifest)!r}), {str(manifest)!r}, {CLASSES!r})
j.label(Clip({b.key!r}, {b.path!r}), "dog")
"""
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.getcwd()},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert manifest.read_text() == before  # the old manifest, untouched
    assert [p.name for p in tmp_path.glob(".labels.*.tmp.csv")]  # the temporary file the rename never moved
    with open_journal(tmp_path) as j:
        assert [e.label for e in j.labels()] == ["cat", "dog"]
    assert rows(manifest) == [("a.mp4", "cat", None, None), ("b.mp4", "dog", None, None)]


def test_a_hand_edited_manifest_is_never_overwritten_silently(tmp_path):
    a = clip(tmp_path, "a.mp4")
    with open_journal(tmp_path) as j:
        j.label(a, "cat")
    manifest = tmp_path / "labels.csv"
    manifest.write_text(manifest.read_text().replace("cat", "dog"))
    os.utime(manifest, (os.path.getmtime(manifest) + 5,) * 2)
    with pytest.raises(JournalError, match="was changed after its label journal"):
        open_journal(tmp_path)


def test_an_existing_manifest_is_imported_and_foreign_labels_refused(tmp_path):
    v = tmp_path / "videos"
    v.mkdir()
    (v / "x.mp4").touch()
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label,start,end\nvideos/x.mp4,dog,1,3\n")
    with open_journal(tmp_path) as j:
        assert [(Path(e.clip.path).name, e.label, e.clip.start) for e in j.labels()] == [("x.mp4", "dog", 1.0)]
        assert j.labels()[0].clip.key == clip_key(v / "x.mp4", 1.0, 3.0)
    with pytest.raises(JournalError, match="holds label\\(s\\) dog that are not among the classes cat, bird"):
        open_journal(tmp_path, classes=("cat", "bird"))


def test_not_a_journal_and_a_second_writer_are_refused(tmp_path):
    jp = journal_path(tmp_path / "labels.csv")
    jp.write_text(json.dumps({"hello": 1}) + "\n")
    with pytest.raises(JournalError, match="damaged line|not a vidtune label journal"):
        open_journal(tmp_path)
    jp.unlink()
    with open_journal(tmp_path):
        with pytest.raises(VidtuneError, match="in use"):
            open_journal(tmp_path)


def test_clip_keys_are_stable_and_distinct(tmp_path):
    p = tmp_path / "v.mp4"
    assert clip_key(p, 0, 2) == clip_key(str(p), 0.0, 2.0)
    assert len({clip_key(p, 0, 2), clip_key(p, 2, 4), clip_key(p, None, None)}) == 3
