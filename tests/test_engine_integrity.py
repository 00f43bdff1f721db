"""Engine files are checked against the digest recorded when they were written: bytes overwritten at any
offset, a truncated or an empty engine (fp32 backbone, its int8 version, a run's head) is rebuilt with one
warning, and ``predict --runtime onnxruntime`` gives the same scores as a clean run: never a traceback,
never ``null`` scores."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from tests.test_export import make_run
from vidtune.cli.main import main
from vidtune.data.sample import write_sample_dataset
from vidtune.engines import cache as engine_cache

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A run, three videos, and an engine cache of their own (filled by the first clean predict)."""
    root = tmp_path_factory.mktemp("integrity")
    data = root / "data"
    write_sample_dataset(data, classes=3, per_class=1, seconds=1.0, fps=8, size=(96, 72), seed=3)
    run = make_run(root / "run", data)  # a mean head: scores that differ from video to video
    mp = pytest.MonkeyPatch()
    mp.setenv("VIDTUNE_CACHE", str(root / "cache"))
    yield {"run": run, "videos": sorted(data.rglob("*.mp4")), "engines": root / "cache" / "engines", "clean": {}}
    mp.undo()
    engine_cache.close_sessions()


def _predict(capsys, world, *extra) -> tuple[dict, str]:
    """``predict --json`` in-process, as a fresh process would run it (no session kept): (path -> scores,
    stderr)."""
    engine_cache.close_sessions()
    capsys.readouterr()
    code = main(["predict", str(world["run"]), *map(str, world["videos"]), "--runtime", "onnxruntime", "--no-cache",
                 "--workers", "0", "-q", "--json", *extra])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err, (out, err)
    got = {}
    for r in json.loads(out)["results"]:
        assert "error" not in r, r
        got[Path(r["path"]).name] = {p["label"]: p["score"] for p in r["predictions"]}
    return got, err


def _clean(capsys, world, precision: str) -> dict:
    """The scores of a clean run (computed once; it also builds the engines the cases damage)."""
    if precision not in world["clean"]:
        world["clean"][precision] = _predict(capsys, world, *(("--int8",) if precision == "int8" else ()))[0]
    return world["clean"][precision]


def _target(world, which: str) -> Path:
    names = {"backbone": "*-[0-9]*.onnx", "int8": "*-int8.onnx", "head": "run-*-head.onnx"}
    found = [p for p in world["engines"].glob(names[which])
             if which != "backbone" or not p.name.endswith(("-int8.onnx", "-head.onnx"))]
    assert len(found) == 1, found
    return found[0]


def _damage(path: Path, how: str) -> None:
    size = path.stat().st_size
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        with open(path, "r+b") as fh:
            fh.truncate(size // 2)
    else:  # overwritten at an offset: the size stays, only a digest tells
        offset = {"start": 0, "middle": size // 2, "end": size - 16}[how]
        with open(path, "r+b") as fh:
            fh.seek(offset)
            fh.write(bytes(range(0xF0, 0x100)))


CASES = [("backbone", how) for how in ("start", "middle", "end", "truncated", "empty")] + \
        [("head", how) for how in ("middle", "truncated", "empty")] + \
        [("int8", how) for how in ("start", "middle", "truncated")]


@pytest.mark.parametrize("which, how", CASES, ids=[f"{w}-{h}" for w, h in CASES])
def test_a_damaged_engine_is_rebuilt_and_predict_gives_the_clean_scores(world, which, how, capsys):
    precision = "int8" if which == "int8" else "fp32"
    extra = ("--int8",) if which == "int8" else ()
    clean = _clean(capsys, world, precision)
    target = _target(world, which)
    before = target.read_bytes()
    _damage(target, how)
    got, err = _predict(capsys, world, *extra)
    for name, scores in clean.items():
        assert all(isinstance(s, float) and math.isfinite(s) for s in got[name].values()), got[name]
        assert got[name] == pytest.approx(scores, abs=1e-6), (name, got[name], scores)
    said = "".join(err.split())  # the terminal wraps long lines
    assert said.count("isdamaged") == 1 and target.name in said, err  # warned once, naming the file
    assert engine_cache.problem(target) is None  # rebuilt and sealed again
    if which != "int8":  # the same graph from the same weights; int8 is checked by its scores above
        assert target.read_bytes() == before
    again, err = _predict(capsys, world, *extra)  # sound now: no warning the next time
    assert again == got and "damaged" not in "".join(err.split())


def test_an_engine_without_its_record_is_rebuilt_quietly(world, capsys):
    """Engines written before records existed are rebuilt once, with no warning (nothing is wrong)."""
    clean = _clean(capsys, world, "fp32")
    target = _target(world, "backbone")
    engine_cache.record_path(target).unlink()
    got, err = _predict(capsys, world)
    assert not err.strip(), err
    for name, scores in clean.items():
        assert got[name] == pytest.approx(scores, abs=1e-6)
    assert engine_cache.problem(target) is None


def test_verified_engines_are_not_hashed_again_in_one_process(world, capsys, monkeypatch):
    _clean(capsys, world, "fp32")
    target = _target(world, "head")
    saved = target.read_bytes()
    engine_cache.close_sessions()
    assert engine_cache.verified(target)
    calls = []
    with monkeypatch.context() as m:
        m.setattr(engine_cache, "content_digest", lambda p: calls.append(p) or "x")
        assert engine_cache.verified(target) and not calls  # same size, mtime and inode: known sound
        shutil.copy(target, target.with_suffix(".tmp"))
        target.with_suffix(".tmp").replace(target)  # a new file (another inode): checked again
        assert not engine_cache.verified(target) and calls  # the digest differs: damaged, removed
    assert not target.exists() and not engine_cache.record_path(target).exists()
    target.write_bytes(saved)
    engine_cache.seal(target)
