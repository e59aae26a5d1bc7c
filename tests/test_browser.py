"""The demo in real headless Chromium gives what `python -m pipeline predict` gives."""

import csv
import json
import random

import pandas as pd
import pytest

from tests import site
from tests.conftest import ROOT, cli
from tests.tiny_data import poster

pytestmark = pytest.mark.browser
SPEC = json.loads((ROOT / "assets/models/manifest.json").read_text())
INT8 = "int8" in SPEC["text_encoder"]["quantization"]
PLOTS = [
    "A retired hitman takes one last job in Tokyo, but the target turns out to be his own daughter.",
    "Two rival chefs fall in love while competing for a small restaurant on the Italian coast.",
    "A family moves into an old farmhouse where the children start hearing voices in the walls at night.",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser")
    site.build(base / "_site")
    srv = site.Server(base / "_site", base / "www")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = site.launch(p)
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "#demo")
        page.wait_for_selector("#demo-app[data-ready='1']", timeout=30_000)
        page.errors = errors
        yield page
        browser.close()


def native(tmp_path, plot, poster_file=""):
    src = tmp_path / "in.csv"
    with open(src, "w", newline="") as f:
        csv.writer(f).writerows([["overview", "poster"], [plot, poster_file]])
    cli("predict", src, "--out", tmp_path / "out.csv")
    row = pd.read_csv(tmp_path / "out.csv").iloc[0]
    return {g: float(row[g]) for g in SPEC["labels"]}


def shown(page):
    items = page.locator("#all-genres li")
    return {
        items.nth(i).get_attribute("data-genre"): float(items.nth(i).get_attribute("data-prob"))
        for i in range(items.count())
    }


def run_demo(page, plot):
    page.fill("#plot", plot)
    page.evaluate("document.getElementById('top3').replaceChildren()")
    page.click("#predict")
    page.wait_for_selector("#top3 li", timeout=120_000)
    return shown(page)


def assert_agree(browser_probs, native_probs):
    tol = 0.05 if INT8 else 1e-3
    assert set(browser_probs) == set(native_probs)
    worst = max(abs(browser_probs[g] - native_probs[g]) for g in native_probs)
    assert worst <= tol, f"largest difference {worst:.4f}"
    ranked = sorted(native_probs, key=native_probs.get, reverse=True)
    top3 = sorted(browser_probs, key=browser_probs.get, reverse=True)[:3]
    if not INT8 or native_probs[ranked[2]] - native_probs[ranked[3]] > 0.05:
        assert set(top3) == set(ranked[:3])
    print(f"browser vs native: largest difference {worst:.5f}")


@pytest.mark.parametrize("plot", PLOTS)
def test_plot_only_matches_native(page, tmp_path, plot):
    assert_agree(run_demo(page, plot), native(tmp_path, plot))
    top = page.locator("#top3 li")
    assert top.count() == 3
    assert "%" in top.first.inner_text()
    assert "ms" in page.inner_text("#timing")
    assert page.errors == []


@pytest.mark.parametrize(
    "name,size,genres",
    [("p.jpg", (185, 278), ["Horror"]), ("q.png", (300, 450), ["Romance"]), ("r.jpg", (640, 360), ["Action"])],
)
def test_plot_with_poster_matches_native(page, tmp_path, name, size, genres):
    poster(tmp_path / name, random.Random(3), genres, size=size)
    page.set_input_files("#poster", str(tmp_path / name))
    page.wait_for_selector("#poster-preview:not([hidden])")
    try:
        for plot in PLOTS[1:]:
            assert_agree(run_demo(page, plot), native(tmp_path, plot, name))
        assert "plot + poster" in page.inner_text("#timing")
    finally:
        page.click("#clear-poster")


def test_sentence_highlights_match_python(page):
    from pipeline.predict import GenrePredictor, sentence_importance

    plot = PLOTS[2] + " Nobody believes them until the youngest disappears. A priest is called."
    run_demo(page, plot)
    page.wait_for_selector("#why:not([hidden]) #why-text mark")
    why = json.loads(page.get_attribute("#demo-app", "data-why"))
    expected = sentence_importance(GenrePredictor(ROOT / "assets/models"), plot)
    assert why["sentences"] == [e["sentence"] for e in expected]
    for i, e in enumerate(expected):
        for k, genre in enumerate(why["genres"]):
            assert abs(why["drops"][i][k] - e["drop"][genre]) <= 0.05
    assert page.locator("#why-genres button").count() == 3
    page.locator("#why-genres button").nth(1).click()
    assert page.locator("#why-genres button").nth(1).get_attribute("aria-pressed") == "true"


def test_huge_image_is_downscaled(page, tmp_path):
    from PIL import Image

    Image.new("RGB", (3000, 4500), (40, 40, 60)).save(tmp_path / "huge.jpg", quality=70)
    page.set_input_files("#poster", str(tmp_path / "huge.jpg"))
    page.wait_for_function("document.getElementById('status').textContent.includes('downscaled')")
    assert page.locator("#poster-preview").is_visible()
    page.click("#clear-poster")


def test_image_over_20_mb_is_rejected(page):
    big = {"name": "big.jpg", "mimeType": "image/jpeg", "buffer": b"\xff" * (21 * 1024 * 1024)}
    page.set_input_files("#poster", files=[big])
    page.wait_for_function("document.getElementById('status').textContent.includes('limit is 20 MB')")
    assert page.locator("#poster-preview").is_hidden()


def test_empty_plot_is_explained(page):
    page.fill("#plot", "   ")
    page.click("#predict")
    assert "paste a plot" in page.inner_text("#status").lower()


def test_non_image_poster_is_rejected(page, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.set_input_files("#poster", str(bad))
    page.wait_for_function("document.getElementById('status').textContent.includes('not an image')")
    assert page.locator("#poster-preview").is_hidden()
