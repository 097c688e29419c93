"""The web page in a real browser (Debian's chromium via playwright, no browser download).

A user opens the page, gives the token, picks a photo, sees the result thumbnails with distances,
opens an item's metadata, then drops a video clip on the page. Set BITSEEK_SERVE_SCREENSHOT to a
path to keep the screenshot (docs/img/serve.png is made that way).
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run does it as root)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (serve extra)")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        b = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        yield b
        b.close()


def _thumbs_loaded(page, n_min: int) -> list[int]:
    page.wait_for_function(
        "n => { const imgs = [...document.querySelectorAll('#results .result img.thumb')];"
        " return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0); }", arg=n_min, timeout=60_000)
    return page.eval_on_selector_all("#results .result img.thumb", "imgs => imgs.map(i => i.naturalWidth)")


def test_search_through_the_page(browser, served, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(served.url) or r.url.startswith(("blob:", "data:"))
            else outside.append(r.url))
    page.goto(served.url + "/")

    # the server wants a token: the page asks for it, then shows the collection's size
    page.wait_for_selector("#auth:not([hidden])", timeout=30_000)
    page.fill("#token", served.token)
    page.click("#auth button")
    page.wait_for_function("() => document.getElementById('info').textContent.includes('items')", timeout=30_000)
    assert page.inner_text("#info") == f"{served.n_items} items"

    # pick a photo: a recompressed crop of one in the collection
    page.fill("#k", "6")
    page.set_input_files("#file", str(served.image_query))
    widths = _thumbs_loaded(page, 1)
    assert all(w > 0 for w in widths)
    cards = page.query_selector_all("#results .result")
    assert 1 <= len(cards) <= 6
    assert int(cards[0].get_attribute("data-id")) == served.image_target_id
    first_caption = cards[0].inner_text()
    assert served.image_target_name in first_caption
    assert ("distance" in first_caption) or ("score" in first_caption)
    assert "result" in page.inner_text("#status") and "error" not in (page.get_attribute("#status", "class") or "")

    # open its metadata
    cards[0].click()
    page.wait_for_selector("#detail:not([hidden])")
    page.wait_for_function("() => document.getElementById('detail-thumb').naturalWidth > 0")
    path_text = page.inner_text("#detail-meta dd[data-key=path]")
    assert path_text.endswith(served.image_target_name)
    assert page.inner_text("#detail-meta dd[data-key=kind]") == "image"
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=False)
    keep = os.environ.get("BITSEEK_SERVE_SCREENSHOT")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep)
    page.click("#detail-close")
    assert page.is_hidden("#detail")

    # drop a video clip on the drop zone, as a user dragging it from their desktop
    data = base64.b64encode(served.video_query.read_bytes()).decode()
    dt = page.evaluate_handle(
        "([b64, name]) => { const bin = atob(b64); const u = new Uint8Array(bin.length);"
        " for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);"
        " const dt = new DataTransfer(); dt.items.add(new File([u], name, {type: 'video/mp4'})); return dt; }",
        [data, served.video_query.name])
    page.dispatch_event("#drop", "drop", {"dataTransfer": dt})
    page.wait_for_function(
        "id => { const c = document.querySelector('#results .result'); return c && c.dataset.id === String(id); }",
        arg=served.video_target_id, timeout=90_000)
    _thumbs_loaded(page, 1)
    assert page.inner_text("#results .result .kind") .lower() == "video"

    # a file that is not media: a clear message on the page, not a broken page
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture\n" * 10)
    page.set_input_files("#file", str(bad))
    page.wait_for_function("() => document.getElementById('status').classList.contains('error')", timeout=30_000)
    assert "not a supported image or video" in page.inner_text("#status")

    assert not errors, errors
    assert not outside, f"the page fetched from outside the server: {outside}"
    page.close()
