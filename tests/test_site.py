"""The Jekyll site builds under a sub-path and shows the pipeline's numbers."""

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests import site

ROOT = site.ROOT


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    dest = tmp_path_factory.mktemp("site") / "_site"
    site.build(dest)
    return dest


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("href", "src", "data-models", "data-vendor"):
            if a.get(key):
                self.refs.append(a[key])
        if a.get("id"):
            self.ids.add(a["id"])


def parse(built):
    p = Links()
    p.feed((built / "index.html").read_text())
    return p


def test_only_the_site_is_published(built):
    for private in (
        "pipeline",
        "tests",
        "notebooks",
        "node_modules",
        ".venv",
        "data",
        "cache",
        "config.toml",
        "Makefile",
    ):
        assert not (built / private).exists(), private
    for needed in (
        "index.html",
        "assets/js/demo.js",
        "assets/models/manifest.json",
        "assets/vendor/ort.wasm.min.mjs",
        "assets/vendor/ort-wasm-simd-threaded.wasm",
        "assets/vendor/tokenizers.min.mjs",
    ):
        assert (built / needed).is_file(), needed


def test_every_number_comes_from_data(built):
    html = (built / "index.html").read_text()
    metrics = json.loads((ROOT / "_data/metrics.json").read_text())
    for model in metrics["models"]:
        assert model["name"] in html
        for key in ("micro_f1", "macro_f1"):
            assert f">{round(model[key], 3)}<" in html, (model["id"], key)
    curation = json.loads((ROOT / "_data/curation.json").read_text())
    for step in curation["steps"]:
        assert f">{step['rows_out']}<" in html
    assert "{{" not in html and "{%" not in html


def test_internal_links_resolve_under_the_baseurl(built):
    page = parse(built)
    for ref in page.refs:
        if ref.startswith("#"):
            assert ref[1:] in page.ids, ref
        elif ref.startswith("/"):
            assert ref.startswith(site.BASEURL + "/"), ref
            assert (built / ref[len(site.BASEURL) + 1 :]).exists() or ref.endswith("/"), ref
        else:
            assert re.match(r"https?://|data:image/", ref), ref


def test_sections_in_order(built):
    ids = re.findall(r'<section id="([^"]+)"', (built / "index.html").read_text())
    assert ids == ["about", "data", "models", "results", "topics", "demo", "reproduce", "credits"]


def test_no_third_party_requests(built):
    html = (built / "index.html").read_text()
    for tag in re.findall(r"<(?:script|link|img)[^>]+>", html):
        assert "http://" not in tag and "https://" not in tag, tag


def test_html_is_valid(built):
    proc = subprocess.run(
        ["npx", "--no-install", "html-validate", "--config", ".htmlvalidate.json", str(built / "index.html")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_linkchecker_finds_no_broken_internal_links(built, tmp_path):
    server = site.Server(built, tmp_path / "www")
    try:
        linkchecker = shutil.which("linkchecker", path=str(Path(sys.executable).parent))
        proc = subprocess.run(
            [linkchecker, "--no-status", "--no-warnings", "-r10", server.url],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 errors found" in proc.stdout


@pytest.mark.browser
@pytest.mark.parametrize("width,height", [(1280, 900), (390, 844)])
def test_page_renders_sections_and_figures(built, tmp_path, width, height):
    from playwright.sync_api import sync_playwright

    server = site.Server(built, tmp_path / "www")
    try:
        with sync_playwright() as p:
            browser = site.launch(p)
            page = browser.new_page(viewport={"width": width, "height": height})
            outside = []
            page.on(
                "request",
                lambda r: r.url.startswith("http://127.0.0.1:") or r.url.startswith("data:") or outside.append(r.url),
            )
            page.goto(server.url)
            for section in ("about", "data", "models", "results", "topics", "demo", "reproduce", "credits"):
                assert page.locator(f"section#{section} h2").is_visible()
            loaded = page.evaluate("""Promise.all([...document.querySelectorAll('main img')]
                .filter((i) => i.checkVisibility())
                .map((i) => { i.loading = 'eager'; return i.decode().then(() => [i.src, i.naturalWidth], () => [i.src, 0]); }))""")
            assert len(loaded) >= 20
            assert [src for src, width in loaded if width == 0] == []
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"page is {overflow}px wider than the screen"
            page.screenshot(path=str(tmp_path / f"page-{width}.png"), full_page=False)
            browser.close()
    finally:
        server.stop()
    assert outside == []
