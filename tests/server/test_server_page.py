"""The web page in a real browser: headless Chromium (the system's) driven by Playwright.

Uploads an image, asks two questions, and checks that each turn's overlay loads, the legend
names the targets and the intent timeline records the narrowing. Skipped, saying why, where
Chromium or Playwright is missing (``.ci/run`` installs both).
"""

from __future__ import annotations

import os

import pytest

CHROMIUM = "/usr/bin/chromium"
#: The flags this machine's closed network needs: no background connections, no sandbox (root).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: install it (apt-get install chromium) to test the page in a browser",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (the test extra)")


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data dir
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = context.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            context.close()


def loaded_overlays(page) -> int:
    return page.evaluate("() => [...document.querySelectorAll('.turn img.overlay')]"
                         ".filter(img => img.complete && img.naturalWidth > 0).length")


def test_upload_ask_twice_and_see_the_overlays(start_server, browser_page, tiny_scene, scene_png, tmp_path):
    server = start_server()
    image = tmp_path / "scene.png"
    image.write_bytes(scene_png)
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('miras-tiny')")
    page.set_input_files("#file", str(image))
    page.wait_for_function("() => document.getElementById('session-info').textContent.includes('256×256')")
    for count, question in enumerate(tiny_scene.requests[:2], start=1):
        page.fill("#question", question)
        page.click("#ask")
        page.wait_for_function(f"() => document.querySelectorAll('.turn').length === {count}")
        page.wait_for_function(f"() => [...document.querySelectorAll('.turn img.overlay')]"
                               f".filter(img => img.complete && img.naturalWidth === 256).length === {count}")
    assert loaded_overlays(page) == 2
    assert page.locator("#view").get_attribute("src").endswith("/turns/2/overlay.png")
    page.wait_for_function("() => document.getElementById('view').naturalWidth === 256")
    legend = page.inner_text("#legend")
    assert "title panel" in legend and "medium" in legend
    swatch = page.eval_on_selector("#legend .swatch", "node => getComputedStyle(node).backgroundColor")
    assert swatch == "rgb(255, 64, 64)"  # the first colour of the server's palette, as in the overlay PNG
    timeline = [item.inner_text() for item in page.locator("#timeline li").all()]
    assert timeline == ["turn 1: first · coarse", "turn 2: refine · medium"]
    assert "Now just its title panel." in page.inner_text("#log")
    assert page.locator("#download-mask").get_attribute("href").endswith("/turns/2/mask.png")
    assert page.locator("#download-rle").get_attribute("href").startswith("blob:")
    assert page.inner_text("#error") == "" and errors == []


def test_a_sample_can_be_picked_and_errors_show_on_the_page(start_server, browser_page, tiny_scene):
    server = start_server()
    page = browser_page
    page.goto(server.url + "/")
    page.wait_for_selector("#samples button.sample")
    page.click("#samples button.sample >> nth=0")
    page.wait_for_function("() => document.getElementById('session-info').textContent.includes('scene-1.png')")
    assert tiny_scene.requests[0] in page.inner_text("#suggestions")
    # past the page's own maxlength: the server's refusal must reach the page as its one line
    page.evaluate("() => { const box = document.getElementById('question'); box.removeAttribute('maxlength');"
                  " box.value = 'y'.repeat(9000); }")
    page.click("#ask")
    page.wait_for_function("() => document.getElementById('error').textContent.length > 0")
    assert "limits.max_question_chars" in page.inner_text("#error")
    assert page.locator(".turn").count() == 0
