"""The Jekyll site builds under a sub-path and shows the pipeline's numbers."""

import json
import re
from html.parser import HTMLParser

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
            assert re.match(r"https?://", ref), ref


def test_sections_in_order(built):
    ids = re.findall(r'<section id="([^"]+)"', (built / "index.html").read_text())
    assert ids == ["about", "data", "models", "results", "topics", "demo", "reproduce", "credits"]


def test_no_third_party_requests(built):
    html = (built / "index.html").read_text()
    for tag in re.findall(r"<(?:script|link|img)[^>]+>", html):
        assert "http://" not in tag and "https://" not in tag, tag
