"""Hardening (issue 16): every CLI command, on every odd input, ends with exit 0, 1 or 2 and a message
that names the file and the fix: never a traceback, never a hang.

``CASES`` is the table: (case id, input maker, command, expected exit code, message fragment). Each
case runs in-process under a watchdog (``signal.alarm``: a hang becomes a failure after
``CASE_LIMIT_S`` instead of a stuck suite; the hangs this guards against are blocking reads of
FIFOs and endless reads of ``/dev/zero``, which SIGALRM interrupts). Every ``--json`` output must
parse as strict JSON (no NaN/Infinity) and encode as UTF-8. Hypothesis adds generated manifests and
argument values (derandomized, bounded). ``python -m pytest tests/test_hardening.py -q -rA`` lists
the cases; docs/reliability.md reports their count.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.limits import hard_timeout
from tests.videos import (
    write_audio_only,
    write_image_as,
    write_indexed_video,
    write_random_bytes,
    write_text,
    write_truncated,
)
from vidtune.cli.main import main
from vidtune.utils import hold_lock

TINY = ["--backbone", "test_efficientnet", "--no-pretrained", "--frames", "2", "--epochs", "1", "--workers", "0"]
EMBED = ["--backbone", "test_efficientnet", "--no-pretrained", "--window", "1", "--stride", "1", "--fps", "2"]
CASE_LIMIT_S = 60


class Hang(Exception):
    pass


def watchdog(seconds: int = CASE_LIMIT_S):
    return hard_timeout(seconds, Hang, "the command")


def strict_json(text: str):
    def no_constants(name):
        raise ValueError(f"not JSON: {name}")

    text.encode("utf-8")  # valid UTF-8 (no lone surrogates)
    return json.loads(text, parse_constant=no_constants)


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """``vidtune ARGV`` in-process under the watchdog: (exit code, stdout, stderr). A traceback fails."""
    capsys.readouterr()
    with watchdog():
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse: bad option value
            code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if "--json" in argv and out.strip():
        strict_json(out)
    return code, out, err


# -- the world the cases run in: tiny videos, a tiny run, a tiny index ---------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = Path(tempfile.mkdtemp(prefix="vth-", dir="/tmp"))  # short: AF_UNIX socket paths are limited
    data = root / "data"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for i in range(3):
            write_indexed_video(data / c / f"{c}{i}.mp4", 6, h=32, w=32)
    run = root / "run"
    assert main(["train", str(data), "--out", str(run), *TINY, "-q"]) == 0
    ix = root / "ix"
    assert main(["index", "build", str(ix), str(data / "a" / "a0.mp4"), *EMBED, "--device", "cpu", "-q"]) == 0
    yield {"root": root, "data": data, "run": run, "ix": ix, "good": data / "a" / "a0.mp4"}
    shutil.rmtree(root, ignore_errors=True)


# -- input makers: (folder, world) -> path ------------------------------------------------------------------
def fifo(d, w):
    os.mkfifo(d / "fifo.mp4")
    return d / "fifo.mp4"


def dev_zero(d, w):
    (d / "zero.mp4").symlink_to("/dev/zero")
    return d / "zero.mp4"


def dev_urandom(d, w):
    (d / "urandom.mp4").symlink_to("/dev/urandom")
    return d / "urandom.mp4"


def unix_socket(d, w):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / "sock.mp4"))
    w.setdefault("sockets", []).append(s)
    return d / "sock.mp4"


def zero_bytes(d, w):
    (d / "empty.mp4").write_bytes(b"")
    return d / "empty.mp4"


def random_bytes(d, w):
    return write_random_bytes(d / "random.mp4")


def text_file(d, w):
    return write_text(d / "text.mp4")


def png_as_mp4(d, w):
    return write_image_as(d / "image.mp4", "png")


def truncated(d, w):
    return write_truncated(w["good"], d / "truncated.mp4", 0.3)


def audio_only(d, w):
    return write_audio_only(d / "audio.mp4")


def missing(d, w):
    return d / "missing.mp4"


def folder_named_mp4(d, w):
    (d / "folder.mp4").mkdir()
    return d / "folder.mp4"


def non_utf8_name(d, w):
    p = d / os.fsdecode(b"clip \xff\xfe.mp4")
    shutil.copy(w["good"], p)
    return p


def control_char_name(d, w):
    p = d / "clip\r\n--> 1\t.mp4"
    shutil.copy(w["good"], p)
    return p


SPECIAL = {"fifo": fifo, "dev_zero": dev_zero, "dev_urandom": dev_urandom, "socket": unix_socket}
BROKEN = {"zero_bytes": zero_bytes, "random_bytes": random_bytes, "text": text_file, "png_as_mp4": png_as_mp4,
          "truncated": truncated, "audio_only": audio_only, "missing": missing, "folder_named_mp4": folder_named_mp4}
ODD_NAMES = {"non_utf8_name": non_utf8_name, "control_char_name": control_char_name}
SPECIAL_MSG = "not a regular file"

# command templates: X = the odd file, D = a copy of the dataset with the odd file in class a,
# RUN, IX (a copy of the index), OUT (a fresh output folder), GOOD (a readable video)
PER_FILE = [
    ("predict", ["predict", "RUN", "X", "--json", "--workers", "0", "-q"], 1),
    ("info", ["info", "X", "--json"], 1),
    ("shots", ["shots", "X", "--json"], 1),
    ("tag", ["tag", "RUN", "X", "--json", "--device", "cpu", "-q"], 1),
    ("embed", ["embed", "X", "--out", "OUT", *EMBED, "--device", "cpu", "--json", "-q"], 2),
    ("search", ["search", "IX", "X", "--device", "cpu", "--json"], 2),
    ("index-add", ["index", "add", "IX", "X", "--device", "cpu", "--json", "-q"], 0),
]
PER_DATASET = [  # the odd file inside a class folder: skipped with a reason, the job goes on
    ("train", ["train", "D", "--out", "OUT", *TINY, "--json", "-q"], 0),
    ("eval", ["eval", "RUN", "D", "--workers", "0", "--json", "-q"], 0),
    ("robustness", ["robustness", "RUN", "D", "--corruptions", "gaussian_noise", "--severities", "1", "--workers",
                    "0", "--no-plot", "--json", "-q"], 0),
]


# a folder argument is searched for videos: one named folder.mp4 holding none is a usage error (exit 2)
EXPECT = {("folder_named_mp4", name): (2, "folder holds no video files")
          for name in ("predict", "shots", "tag", "embed", "index-add")}
EXPECT[("folder_named_mp4", "search")] = (2, "is a directory")
EXPECT[("folder_named_mp4", "info")] = (1, "is a directory")


def _cases():
    cases = []
    for kind, maker in {**SPECIAL, **BROKEN}.items():
        msg = SPECIAL_MSG if kind in SPECIAL else ""
        for name, argv, code in PER_FILE:
            code, frag = EXPECT.get((kind, name), (code, msg))
            cases.append((f"{kind}-{name}", maker, argv, code, frag))
    for kind, maker in SPECIAL.items():  # the hangs: through every dataset command
        for name, argv, code in PER_DATASET:
            cases.append((f"{kind}-{name}", maker, argv, code, SPECIAL_MSG))
    cases.append(("all-broken-train", "all-broken", PER_DATASET[0][1], 0, ""))
    cases.append(("all-broken-eval", "all-broken", PER_DATASET[1][1], 0, ""))
    for kind, maker in ODD_NAMES.items():  # readable videos with odd names: exit 0, valid JSON and exports
        for name, argv, _ in PER_FILE + PER_DATASET:
            cases.append((f"{kind}-{name}", maker, argv, 0, ""))
        cases.append((f"{kind}-tag-csv", maker, ["tag", "RUN", "X", "--format", "csv", "--device", "cpu", "-q"], 0,
                       ""))
        cases.append((f"{kind}-tag-srt", maker, ["tag", "RUN", "X", "--format", "srt", "--device", "cpu", "-q"], 0,
                       ""))
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_odd_input_table(case, world, capsys, tmp_path):
    cid, maker, argv, want, fragment = case
    d = Path(tempfile.mkdtemp(prefix="c-", dir=world["root"]))
    if maker == "all-broken":
        odd = [m(d, world) for m in BROKEN.values() if m not in (missing, folder_named_mp4)]
    else:
        odd = [maker(d, world)]
    data = d / "data"
    shutil.copytree(world["data"], data)
    for p in odd:
        target = data / "a" / p.name
        if p.is_symlink():
            target.symlink_to(os.readlink(p))
        elif p.exists() and not p.is_dir() and p.is_file():
            shutil.copy(p, target)
        elif p.exists() and not p.is_dir():  # fifo, socket: make another of the same kind
            if maker is fifo:
                os.mkfifo(target)
            else:
                unix_socket(data / "a", world)
    ix = d / "ix"
    shutil.copytree(world["ix"], ix)
    subst = {"RUN": world["run"], "X": odd[0], "D": data, "IX": ix, "OUT": d / "out", "GOOD": world["good"]}
    code, out, err = run_cli([subst.get(a, a) for a in argv], capsys)
    assert code == want, (cid, out[-2000:], err[-2000:])
    text = out + err
    assert fragment in text, (cid, text[-2000:])
    if "--json" in argv and argv[0] in ("train", "eval", "robustness"):
        res = strict_json(out)
        skipped = {os.fsencode(s["path"]) for s in res["skipped"]}
        if want == 0 and cid.split("-")[0] in {**SPECIAL, **BROKEN} or maker == "all-broken":
            assert {os.fsencode(str(data / "a" / p.name)) for p in odd} <= skipped, (cid, res["skipped"])
    if "--json" in argv and argv[0] in ("predict", "info", "shots", "tag") and want == 1:
        res = strict_json(out)
        assert "error" in res["results"][0] and res["results"][0]["path"] == str(odd[0])
    if maker is non_utf8_name and "--json" in argv and argv[0] == "predict":
        res = strict_json(out)
        assert os.fsencode(res["results"][0]["path"]) == os.fsencode(str(odd[0]))  # exact bytes round trip
        assert "\\udcff" in out
    if argv[:2] == ["tag", "RUN"] and "srt" in argv:
        assert all(line.count("-->") <= 1 for line in out.splitlines()), out
        assert "\r" not in out and all(line != "" or True for line in out.splitlines())


# -- the other hardening cases ---------------------------------------------------------------------------------
def _nan_copy(src: Path, dst: Path) -> Path:
    """The same weights file (metadata included) with every float tensor NaN."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    save_file({k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v) for k, v in t.items()}, str(dst),
              metadata=meta)
    return dst


def test_manifest_whole_file_and_segment_rows_train(world, capsys, tmp_path):
    good = world["good"]
    other = world["data"] / "b" / "b0.mp4"
    (tmp_path / "m.csv").write_text(f"path,label,start,end\n{good},a,,\n{good},a,0,0.5\n{other},b,,\n"
                                    f"{world['data'] / 'b' / 'b1.mp4'},b,0.1,0.4\n")
    code, out, err = run_cli(["train", tmp_path / "m.csv", "--out", tmp_path / "r", *TINY, "--val-split", "0",
                              "--json", "-q"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN"])
def test_manifest_non_finite_times_are_refused(world, capsys, tmp_path, bad):
    (tmp_path / "m.csv").write_text(f"path,label,start,end\n{world['good']},a,{bad},\n")
    code, out, err = run_cli(["train", tmp_path / "m.csv", "--out", tmp_path / "r", *TINY, "--json", "-q"], capsys)
    assert code == 2 and "finite" in err and "m.csv:2" in err


@pytest.mark.parametrize("argv,fragment", [
    (["tag", "RUN", "GOOD", "--stride", "nan"], "finite"),
    (["tag", "RUN", "GOOD", "--window", "inf"], "finite"),
    (["search", "IX", "GOOD", "--start", "nan"], "finite"),
    (["search", "IX", "GOOD", "--end=-inf"], "finite"),
    (["train", "DATA", "--out", "OUT", "--lr", "nan"], "finite"),
    (["embed", "GOOD", "--out", "OUT", "--fps", "nan"], "finite"),
    (["dedupe", "IX", "--threshold", "nan"], "finite"),
    (["shots", "GOOD", "--threshold", "inf"], "finite"),
    (["tag", "RUN", "GOOD", "--out", "FOLDER", "--format", "json"], "is a folder"),
    (["tag", "RUN", "GOOD", "--out", "UNDERFILE", "--format", "csv"], "which is a file"),
    (["dedupe", "IX", "--csv", "FOLDER"], "is a folder"),
    (["dedupe", "IX", "--csv", "UNDERFILE"], "which is a file"),
    (["embed", "GOOD", "--out", "UNDERFILE", *EMBED], "which is a file"),
    (["embed", "GOOD", "--out", "AFILE", *EMBED], "is not a folder"),
    (["train", "DATA", "--out", "UNDERFILE", *TINY], "cannot write"),
    (["train", "DATA", "--out", "RUN", *TINY], "--overwrite"),
    # tiny but positive: a grid of 1e300 windows once exhausted the machine's memory
    (["tag", "RUN", "GOOD", "--window", "1e-300", "--device", "cpu"], "--window of 1e-300 s is too short"),
    (["embed", "GOOD", "--out", "OUT", *EMBED, "--window", "1e-300", "--stride", "1e-300"], "--window must be"),
])
def test_bad_arguments_and_output_paths_exit_2(world, capsys, tmp_path, argv, fragment):
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    subst = {"RUN": world["run"], "GOOD": world["good"], "IX": world["ix"], "DATA": world["data"],
             "OUT": tmp_path / "out", "FOLDER": tmp_path / "folder", "AFILE": tmp_path / "afile",
             "UNDERFILE": tmp_path / "afile" / "x.csv"}
    code, out, err = run_cli([subst.get(a, a) for a in argv], capsys)
    assert code == 2 and fragment in err, err


def test_train_overwrite_and_concurrent_writers(world, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    code, _, err = run_cli(["train", world["data"], "--out", run, *TINY, "--overwrite", "-q"], capsys)
    assert code == 0, err
    lock = hold_lock(run / ".lock", "test", "another vidtune train")  # a second writer on the same folder
    try:
        code, out, err = run_cli(["train", world["data"], "--out", run, *TINY, "--overwrite", "--json"], capsys)
        assert code == 2 and "in use" in err and f"pid {os.getpid()}" in err and "error" in strict_json(out)
        ix = tmp_path / "ix"
        shutil.copytree(world["ix"], ix)
        with hold_lock(ix / ".lock", "test", "another vidtune index add"):
            code, _, err = run_cli(["index", "add", ix, world["data"] / "b" / "b0.mp4", "--device", "cpu", "-q"],
                                   capsys)
            assert code == 2 and "in use" in err and "index add" in err
    finally:
        lock.close()


def test_symlinked_class_folders_are_refused(world, capsys, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    (data / "b" / "alias.mp4").symlink_to(data / "a" / "a0.mp4")
    code, _, err = run_cli(["train", data, "--out", tmp_path / "r", *TINY, "-q"], capsys)
    assert code == 2 and "same file" in err and "alias.mp4" in err


def test_nan_weights_are_an_error_never_a_result(world, capsys, tmp_path):
    """NaN weights: training stops at the first features, predict/eval exit 2 instead of printing null
    scores, and nothing non-finite reaches the feature cache."""
    weights = _nan_copy(world["run"] / "model.safetensors", tmp_path / "nan.safetensors")
    args = [a for a in TINY if a != "--no-pretrained"]
    cache = tmp_path / "cache"
    code, _, err = run_cli(["train", world["data"], "--out", tmp_path / "r", *args, "--weights", weights, "--cache-dir",
                            cache, "-q"], capsys)
    assert code == 2 and "NaN or infinite" in err, err
    run = tmp_path / "nanrun"
    shutil.copytree(world["run"], run)
    _nan_copy(world["run"] / "model.safetensors", run / "model.safetensors")
    for extra in (["--no-cache"], ["--cache-dir", cache]):
        code, out, err = run_cli(["predict", run, world["good"], "--json", "--workers", "0", *extra, "-q"], capsys)
        assert code == 2 and "NaN or infinite" in strict_json(out)["error"], (out, err)
        code, out, err = run_cli(["eval", run, world["data"], "--json", "--workers", "0", *extra, "-q"], capsys)
        assert code == 2 and "NaN or infinite" in err, (out, err)
    assert not list(cache.glob("*/*.safetensors"))


def test_interrupted_train_mentions_resume(world, capsys, tmp_path, monkeypatch):
    import vidtune.train.trainer as trainer

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_train", interrupted)
    code, _, err = run_cli(["train", world["data"], "--out", tmp_path / "r", *TINY, "-q"], capsys)
    assert code == 130 and "--resume" in err


def _enospc_under(monkeypatch, folder: Path):
    """fsync of any file under ``folder`` fails with ENOSPC (a full disk), everything else works."""
    real = os.fsync

    def fsync(fd):
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            where = ""
        if where.startswith(str(folder)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full(world, capsys, tmp_path, monkeypatch):
    import safetensors.numpy
    from safetensors import SafetensorError

    # the feature cache costs only itself: a full disk there (a SafetensorError) and training goes on
    real_save = safetensors.numpy.save_file  # what the feature cache writes with

    def full(tensors, filename, *a, **k):
        if str(filename).startswith(str(tmp_path / "cache")):
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                                  '"No space left on device" })')
        return real_save(tensors, filename, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(safetensors.numpy, "save_file", full)
        code, _, err = run_cli(["train", world["data"], "--out", tmp_path / "r1", *TINY, "--cache-dir",
                                tmp_path / "cache", "-q"], capsys)
    assert code == 0, err
    assert not list((tmp_path / "cache").glob("*/*.safetensors"))
    # a full disk under --out, an embed folder, an index: exit 2 naming the path
    out = tmp_path / "full"
    out.mkdir()
    _enospc_under(monkeypatch, out)
    code, _, err = run_cli(["train", world["data"], "--out", out / "r", *TINY, "-q"], capsys)
    assert code == 2 and "no space left" in err and str(out / "r") in err
    code, _, err = run_cli(["embed", world["good"], "--out", out / "e", *EMBED, "--device", "cpu", "-q"], capsys)
    assert code == 2 and "no space left" in err and str(out / "e") in err, err
    ix = out / "ix"
    shutil.copytree(world["ix"], ix)
    code, _, err = run_cli(["index", "add", ix, world["data"] / "b" / "b0.mp4", "--device", "cpu", "-q"], capsys)
    assert code == 2 and "no space left" in err and str(ix) in err and "unchanged" in err
    monkeypatch.undo()
    code, out_text, _ = run_cli(["index", "info", ix, "--json"], capsys)
    assert code == 0 and strict_json(out_text)["videos"] == 1


def test_subtitle_and_csv_exports_escape_control_characters(world, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    config = json.loads((run / "config.json").read_text())
    evil = "x\r2\n00:00:05,000 --> 00:00:09,000\nowned\x00\u2028"
    config["labels"] = [evil, evil + "!"]
    (run / "config.json").write_text(json.dumps(config))
    for fmt in ("srt", "vtt", "csv"):
        code, out, err = run_cli(["tag", run, world["good"], "--format", fmt, "--device", "cpu", "--smooth", "0",
                                  "--min-segment", "0", "-q"], capsys)
        assert code == 0, err
        lines = out.split("\n")
        assert not any(c in out for c in "\r\x00\u2028")
        if fmt != "csv":
            assert all(line.count("-->") <= 1 for line in lines)
            cues = [line for line in lines if "-->" in line]
            assert all(line[:2].isdigit() and line.count(":") == 4 for line in cues), cues
        else:
            assert len([line for line in lines if line]) >= 2 and "\\r" in out


# -- generated inputs ----------------------------------------------------------------------------------------
labels = st.sampled_from(["a", "b", "", "a|b", "c", "a\r", "x\x00y", "\u2028", "é"])
times = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["", "abc", "-1"]))
PATHS = ["GOOD", "missing.mp4", "FIFO", "ZERO", "DIR", "GOOD2"]


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(rows=st.lists(st.tuples(st.sampled_from(PATHS), labels, times, times,
                               st.sampled_from(["", "train", "test", "junk"])), min_size=1, max_size=5),
       jsonl=st.booleans())
def test_generated_manifests_never_crash_or_hang(world, capsys, rows, jsonl):
    import csv
    import io

    d = Path(tempfile.mkdtemp(prefix="h-", dir=world["root"]))
    os.mkfifo(d / "fifo.mp4")
    (d / "zero.mp4").symlink_to("/dev/zero")
    (d / "dir.mp4").mkdir()
    where = {"GOOD": str(world["good"]), "GOOD2": str(world["data"] / "b" / "b2.mp4"), "FIFO": "fifo.mp4",
             "ZERO": "zero.mp4", "DIR": "dir.mp4"}
    recs = [{"path": where.get(p, p), "label": lab, "start": s, "end": e, "split": sp} for p, lab, s, e, sp in rows]
    if jsonl:
        m = d / "m.jsonl"
        m.write_text("".join(json.dumps(r) + "\n" for r in recs))
    else:
        m = d / "m.csv"
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["path", "label", "start", "end", "split"])
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in recs)
        m.write_text(buf.getvalue())
    code, out, err = run_cli(["eval", world["run"], m, "--workers", "0", "--json", "-q", "--split", "all"], capsys)
    assert code in (0, 2), err


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(cmd=st.sampled_from(["shots", "tag", "search"]),
       a=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["x", "", "1e999", "-0"])),
       b=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["x", "", "1e999", "-0"])))
def test_generated_argument_values_never_crash_or_hang(world, capsys, cmd, a, b):
    flags = {"shots": ["--threshold", "--min-shot"], "tag": ["--stride", "--window"], "search": ["--start", "--end"]}
    head = {"shots": ["shots", world["good"]], "tag": ["tag", world["run"], world["good"], "--device", "cpu", "-q"],
            "search": ["search", world["ix"], world["good"], "--device", "cpu"]}[cmd]
    f1, f2 = flags[cmd]
    code, out, err = run_cli([*head, f"{f1}={a}", f"{f2}={b}", "--json"], capsys)
    assert code in (0, 1, 2), err


# -- integrity: nothing read back from disk is trusted unverified (issue 26) -----------------------------------
def _overwrite(path: Path, offset: int, n: int = 4) -> None:
    """Flip ``n`` bytes of ``path`` in place at ``offset`` (negative: from the end); the size is unchanged."""
    at = offset % path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(at)
        old = fh.read(n)
        fh.seek(at)
        fh.write(bytes(b ^ 0x5A for b in old))


def _predictions(capsys, run, videos, cache) -> tuple[list, str]:
    code, out, err = run_cli(["predict", run, *videos, "--json", "--workers", "0", "--runtime", "torch", "--cache-dir",
                              cache, "-q"], capsys)
    assert code == 0, err
    return [r["predictions"] for r in strict_json(out)["results"]], err


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/*.safetensors"))


def _no_temp_files(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if ".tmp" in p.name or ".exporting" in p.name]
    assert not left, left


# bytes overwritten in the length prefix, the JSON header (metadata) and the tensor data of every entry
@pytest.mark.parametrize("offset", [2, 40, -3], ids=["length", "header", "data"])
def test_damaged_feature_cache_entries_are_recomputed_with_the_clean_scores(world, capsys, tmp_path, offset):
    import numpy as np

    from vidtune.runs.cache import FeatureCache

    videos = [world["good"], write_indexed_video(tmp_path / "other.mp4", 9, h=40, w=48)]
    cache = tmp_path / "cache"
    clean, _ = _predictions(capsys, world["run"], videos, cache)
    entries = _entries(cache)
    assert len(entries) == 2
    fc = FeatureCache(cache)
    good = {p: fc.get_array(p.stem) for p in entries}
    for p in entries:
        _overwrite(p, offset)
    again, err = _predictions(capsys, world["run"], videos, cache)
    assert again == clean
    assert err.count("is damaged") == 1, err  # warned once for the cache, not once per entry
    for p in entries:  # replaced by the recomputed entries, which verify
        assert np.allclose(fc.get_array(p.stem), good[p], atol=1e-5)
    _no_temp_files(cache)


def test_feature_cache_refuses_nan_and_treats_legacy_or_nan_entries_as_misses(world, capsys, tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    from vidtune.errors import NonFiniteError
    from vidtune.runs.cache import FeatureCache

    cache = tmp_path / "cache"
    fc = FeatureCache(cache)
    with pytest.raises(NonFiniteError):
        fc.put_array("ab" * 12, np.array([1.0, np.nan], np.float32))
    assert not _entries(cache)
    clean, _ = _predictions(capsys, world["run"], [world["good"]], cache)
    (entry,) = _entries(cache)
    arr = fc.get_array(entry.stem)
    # an entry written before checksums (no metadata) holding other numbers: a miss, not a result
    save_file({"features": np.zeros_like(arr)}, str(entry))
    assert fc.get_array(entry.stem) is None
    assert _predictions(capsys, world["run"], [world["good"]], cache)[0] == clean
    # a NaN entry whose checksum matches (an older vidtune cached a damaged engine's output): damaged
    from vidtune.utils import array_checksum

    bad = np.full_like(arr, np.nan)
    save_file({"features": bad}, str(entry), metadata={"checksum": array_checksum(bad), "algo": "blake2b-128"})
    again, err = _predictions(capsys, world["run"], [world["good"]], cache)
    assert again == clean and "NaN or infinite" in err
    assert np.isfinite(fc.get_array(entry.stem)).all()


def _search_scores(capsys, ix, query) -> list:
    code, out, err = run_cli(["search", ix, query, "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    return [(r["path"], r["score"]) for r in strict_json(out)["results"]]


@pytest.mark.parametrize("offset", [12, 0.5, -4], ids=["header", "middle", "end"])
def test_damaged_index_vectors_exit_2_naming_the_file(world, capsys, tmp_path, offset):
    ix = tmp_path / "ix"
    shutil.copytree(world["ix"], ix)
    (vectors,) = ix.glob("vectors.*.faiss")
    _overwrite(vectors, int(vectors.stat().st_size * offset) if isinstance(offset, float) else offset)
    b0 = world["data"] / "b" / "b0.mp4"
    for argv in (["search", ix, world["good"], "--device", "cpu", "--json"],
                 ["index", "add", ix, b0, "--device", "cpu", "--json", "-q"],
                 ["index", "merge", tmp_path / "merged", ix, "--json"],
                 ["dedupe", ix, "--json"]):
        code, out, err = run_cli(argv, capsys)
        assert code == 2 and str(vectors) in err and "damaged" in err, (argv, err)
        assert str(vectors) in strict_json(out)["error"]
    assert not (tmp_path / "merged").exists()  # the merge refused before creating anything
    code, out, _ = run_cli(["index", "info", ix, "--json"], capsys)
    assert code == 0 and strict_json(out)["videos"] == 1  # the add changed nothing


def test_index_without_a_recorded_checksum_is_read_and_gets_one_at_its_next_write(world, capsys, tmp_path):
    import sqlite3

    ix = tmp_path / "ix"
    shutil.copytree(world["ix"], ix)
    clean = _search_scores(capsys, world["ix"], world["good"])
    with sqlite3.connect(ix / "index.sqlite") as db:  # as an index written before checksums
        db.execute("DELETE FROM meta WHERE key = 'vectors_checksum'")
    assert _search_scores(capsys, ix, world["good"]) == clean
    code, _, err = run_cli(["index", "add", ix, world["data"] / "b" / "b0.mp4", "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    (vectors,) = ix.glob("vectors.*.faiss")
    _overwrite(vectors, -4)
    code, _, err = run_cli(["search", ix, world["good"], "--device", "cpu"], capsys)
    assert code == 2 and str(vectors) in err


def _device_nodes(d: Path) -> dict[str, Path]:
    """A character device like /dev/null and one like /dev/full, a FIFO and a block device of a major number
    reserved for local use (no driver: nothing can be written into it even by mistake), inside ``d``."""
    nodes = {"null": (d / "null", os.makedev(1, 3)), "full": (d / "full", os.makedev(1, 7)),
             "block": (d / "block", os.makedev(241, 0))}
    import stat

    for path, dev in nodes.values():
        os.mknod(path, (stat.S_IFBLK if path.name == "block" else stat.S_IFCHR) | 0o666, dev)
    os.mkfifo(d / "fifo")
    return {k: v[0] for k, v in nodes.items()} | {"fifo": d / "fifo"}


def _kinds(paths) -> dict:
    import stat

    return {p.name: stat.S_IFMT(os.lstat(p).st_mode) for p in paths}


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of device nodes needs root")


@needs_root
@pytest.mark.parametrize("argv,node,code,fragment", [
    (["tag", "RUN", "GOOD", "--format", "json", "--out", "NODE", "--device", "cpu", "-q"], "null", 0, ""),
    (["tag", "RUN", "GOOD", "--format", "csv", "--out", "NODE", "--device", "cpu", "-q"], "full", 2, "no space left"),
    (["tag", "RUN", "GOOD", "--format", "json", "--out", "NODE", "--device", "cpu", "-q"], "fifo", 2, "FIFO"),
    (["tag", "RUN", "GOOD", "--format", "json", "--out", "NODE", "--device", "cpu", "-q"], "block", 2, "block device"),
    (["tag", "RUN", "GOOD", "--plot", "NODE", "--device", "cpu", "-q"], "null", 0, ""),
    (["tag", "RUN", "GOOD", "--plot", "NODE", "--device", "cpu", "-q"], "full", 2, "no space left"),
    (["dedupe", "IX", "--csv", "NODE"], "null", 0, ""),
    (["dedupe", "IX", "--csv", "NODE"], "block", 2, "block device"),
    (["export", "RUN", "--format", "onnx", "--out", "NODE", "-q"], "full", 2, "character device"),
    (["export", "RUN", "--format", "torchscript", "--out", "NODE", "-q"], "null", 2, "character device"),
], ids=lambda v: "-".join(v[:1] + [x for x in v if x.startswith("--") and x not in ("--device", "-q")][:2])
   if isinstance(v, list) else str(v))
def test_outputs_never_replace_a_device_node(world, capsys, tmp_path, argv, node, code, fragment):
    d = tmp_path / "dev"
    d.mkdir()
    nodes = _device_nodes(d)
    before = _kinds(nodes.values())
    subst = {"RUN": world["run"], "GOOD": world["good"], "IX": world["ix"], "NODE": nodes[node]}
    got, out, err = run_cli([subst.get(a, a) for a in argv], capsys)
    assert got == code and fragment in err, (got, err[-1500:])
    assert _kinds(nodes.values()) == before  # every node is still the node it was
    assert sorted(p.name for p in d.iterdir()) == sorted(before)  # no sidecar, no temporary file beside them
    assert not [p for p in Path(tempfile.gettempdir()).glob(".vidtune-out.*")]


def test_exports_have_their_own_sidecars_and_fail_without_leaving_files(world, capsys, tmp_path):
    code, _, err = run_cli(["export", world["run"], "--format", "onnx", "--out", tmp_path / "m.onnx",
                            "--parity-clips", "1", "-q"], capsys)
    assert code == 0, err
    other = tmp_path / "other"
    shutil.copytree(world["run"], other)
    code, _, err = run_cli(["export", other, "--format", "torchscript", "--out", tmp_path / "m.pt",
                            "--parity-clips", "1", "-q"], capsys)
    assert code == 0, err
    onnx_side = json.loads((tmp_path / "m.onnx.json").read_text())
    pt_side = json.loads((tmp_path / "m.pt.json").read_text())
    assert onnx_side["model_file"] == "m.onnx" and onnx_side["run"]["dir"] == str(world["run"])
    assert pt_side["model_file"] == "m.pt" and pt_side["run"]["dir"] == str(other)
    assert not (tmp_path / "m.json").exists()
    # --videos that cannot be read: exit 2 before anything is written; the earlier export stays as it was
    model = (tmp_path / "m.onnx").read_bytes()
    junk = write_random_bytes(tmp_path / "junk.mp4")
    code, _, err = run_cli(["export", world["run"], "--out", tmp_path / "m.onnx", "--videos", junk, "-q"], capsys)
    assert code == 2 and "could be decoded" in err
    code, _, err = run_cli(["export", world["run"], "--out", tmp_path / "new.onnx", "--videos", junk, "-q"], capsys)
    assert code == 2 and not (tmp_path / "new.onnx").exists() and not (tmp_path / "new.onnx.json").exists()
    assert (tmp_path / "m.onnx").read_bytes() == model
    # NaN weights: a clear error for every format, no model file
    nanrun = tmp_path / "nanrun"
    shutil.copytree(world["run"], nanrun)
    _nan_copy(world["run"] / "model.safetensors", nanrun / "model.safetensors")
    for fmt, name in (("onnx", "n.onnx"), ("torchscript", "n.pt")):
        code, out, err = run_cli(["export", nanrun, "--format", fmt, "--out", tmp_path / name, "--json", "-q"], capsys)
        assert code == 2 and "NaN or infinite" in strict_json(out)["error"], err
        assert not (tmp_path / name).exists()
    _no_temp_files(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("argv,fragment", [
    (["search", "IX", "--text", os.fsdecode(b"exit \xff")], "not valid UTF-8"),
    (["ocr", "GOOD", "--fps", "1e9", "-q"], "--fps must be at most 240"),
    (["index", "build", "OUT", "GOOD", "--modalities", "text", "--ocr-fps", "1e9", "-q"], "--ocr-fps must be at most"),
    (["embed", "GOOD", "--out", "OUT", *EMBED[:-1], "1e9"], "--fps must be at most"),
    (["train", "DATA", "--out", "OUT", *TINY[:-4], "--epochs", "1000000000"], "--epochs must be at most"),
    (["train", "DATA", "--out", "OUT", *TINY, "--frames", "100000"], "--frames must be at most 512"),
    (["predict", "RUN", "GOOD", "-k", "99999999"], "-k must be at most"),
    (["sample-data", "OUT", "--seconds", "1e9"], "--seconds must be at most"),
    (["train", "DATA", "--out", "OUT", *TINY, "--seed", "-1"], "--seed must be >= 0"),
])
def test_out_of_bound_numbers_and_undecodable_text_exit_2(world, capsys, tmp_path, argv, fragment):
    subst = {"IX": world["ix"], "GOOD": world["good"], "OUT": tmp_path / "out", "DATA": world["data"],
             "RUN": world["run"]}
    code, out, err = run_cli([subst.get(a, a) for a in argv], capsys)
    assert code == 2 and fragment in err, err
    assert not (tmp_path / "out").exists()


def test_failed_index_build_leaves_no_half_index(world, capsys, tmp_path, monkeypatch):
    import vidtune.index.text_search as text_search
    from vidtune.errors import DatasetError

    def broken(*a, **k):
        raise DatasetError("the text reader failed")

    monkeypatch.setattr(text_search, "index_text", broken)
    ix = tmp_path / "ixo"
    code, _, err = run_cli(["index", "build", ix, world["good"], *EMBED, "--modalities", "visual,text", "--device",
                            "cpu", "-q"], capsys)
    assert code == 2 and "text reader failed" in err
    assert not ix.exists()  # info and build agree: there is no index
    monkeypatch.undo()
    code, _, err = run_cli(["index", "build", ix, world["good"], *EMBED, "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    code, out, _ = run_cli(["index", "info", ix, "--json"], capsys)
    assert code == 0 and strict_json(out)["videos"] == 1


def test_terminal_tables_escape_control_characters_of_file_names(world, capsys, tmp_path):
    evil = tmp_path / "clip\r\n--> 1\x1b[2J.mp4"
    shutil.copy(world["good"], evil)
    for argv in (["predict", world["run"], evil, "--workers", "0", "-k", "5", "-q"], ["info", evil],
                 ["shots", evil], ["tag", world["run"], evil, "--device", "cpu", "-q"]):
        code, out, err = run_cli(argv, capsys)
        assert code == 0, err
        assert not any(c in out + err for c in "\r\x1b"), (argv, out)
        assert "\\r" in out and "\\x1b" in out, (argv, out)
