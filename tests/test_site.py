"""The Jekyll site builds under a sub-path and shows the pipeline's numbers."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

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


PUBLISHED_AT_TOP = {"index.html", "sw.js"}  # the page and the demo's service worker
ASSET_TYPES = {".css", ".js", ".mjs", ".wasm", ".onnx", ".json", ".png", ".jpg", ".svg", ".webp", ".html"}


def test_only_the_site_is_published(built):
    """The page and its assets, nothing else: no Python, no bench/, no build or config files."""
    files = [p.relative_to(built) for p in built.rglob("*") if p.is_file()]
    for f in files:
        if len(f.parts) == 1:
            assert f.name in PUBLISHED_AT_TOP, f
        else:
            assert f.parts[0] == "assets" and f.suffix in ASSET_TYPES, f
    for private in ("pipeline", "bench", "tests", "notebooks", "scripts", "data", "cache", "node_modules", ".venv"):
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


def test_published_models_match_the_manifest(built):
    """What the demo downloads is what manifest.json describes, byte for byte."""
    spec = json.loads((built / "assets/models/manifest.json").read_text())
    for name, info in spec["files"].items():
        data = (built / "assets/models" / name).read_bytes()
        assert len(data) == info["bytes"] and hashlib.sha256(data).hexdigest() == info["sha256"], name


MODELS = ROOT / "assets/models"
MANIFEST = json.loads((MODELS / "manifest.json").read_text())


@pytest.mark.parametrize("name", sorted(MANIFEST["files"]))
def test_committed_models_match_the_manifest(name):
    data = (MODELS / name).read_bytes()
    info = MANIFEST["files"][name]
    assert len(data) == info["bytes"], f"{name}: {len(data)} bytes, manifest says {info['bytes']}"
    assert hashlib.sha256(data).hexdigest() == info["sha256"], f"{name}: sha256 differs from the manifest"


def test_no_stray_files_beside_the_models():
    assert sorted(p.name for p in MODELS.iterdir()) == sorted([*MANIFEST["files"], "manifest.json"])


def test_models_json_agrees_with_the_manifest():
    """_data/models.json (what the page prints about the models) is the manifest plus what export adds."""
    summary = json.loads((ROOT / "_data/models.json").read_text())
    for key, value in MANIFEST.items():
        assert summary.get(key) == value, f"_data/models.json '{key}' differs from assets/models/manifest.json"
    size = {name: info["bytes"] for name, info in MANIFEST["files"].items()}
    text = MANIFEST["text_encoder"]
    plot_only = size[text["file"]] + size[text["tokenizer"]] + size[MANIFEST["fusion_head"]["file"]]
    poster = size[MANIFEST["poster_encoder"]["file"]] + size[MANIFEST["poster_cam"]["file"]]
    assert summary["plot_only_mb"] == round(plot_only / 2**20, 1)  # a plot-only visitor's download
    assert summary["download_mb"] == round((plot_only + poster) / 2**20, 1)  # with a poster (and its heatmaps)


class Text(HTMLParser):
    """The page's visible text, without scripts, styles, and code (commands and identifiers)."""

    SKIP = {"script", "style", "code", "pre"}

    def __init__(self):
        super().__init__()
        self.depth, self.parts = 0, []

    def handle_starttag(self, tag, attrs):
        self.depth += tag in self.SKIP

    def handle_endtag(self, tag):
        self.depth -= tag in self.SKIP

    def handle_data(self, data):
        if not self.depth:
            self.parts.append(data)


NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?(?:e-?\d+)?)(?![\w.]*\w)")

# Numbers the page may print that are not results: the prose's fixed facts. Everything else must
# come from _data/ (or _config.yml).
ALLOWED = {
    "6": "MiniLM-L6 has 6 layers",
    "12": "ELECTRA-small has 12 layers (the seed's recipe)",
    "7": "Lite0's last convolution is a 7×7 grid",
    "95": "95 % bootstrap intervals",
}


def data_numbers() -> tuple[set[int], list[float]]:
    """Integers and floats in _data/ and _config.yml, with what the page derives from them: ×100
    (percentages), bytes in MB, list lengths; numbers inside strings too."""
    ints, floats = set(), []

    def add(v):
        if isinstance(v, bool):
            return
        if isinstance(v, int):
            ints.add(abs(v))
            v = float(v)
        if isinstance(v, float):
            for x in (abs(v), abs(v) * 100, abs(v) / 2**20):
                floats.append(x)
                if x == int(x):
                    ints.add(int(x))
        if isinstance(v, str):
            for token in NUMBER.findall(v):
                add(float(token) if "." in token or "e" in token else int(token))
        if isinstance(v, dict):
            for k, x in v.items():
                add(k)
                add(x)
        if isinstance(v, list):
            ints.add(len(v))
            for x in v:
                add(x)

    for path in [*sorted((ROOT / "_data").iterdir()), ROOT / "_config.yml"]:
        text = path.read_text()
        add(json.loads(text) if path.suffix == ".json" else yaml.safe_load(text))
    return ints, floats


def printed_as(token: str, ints: set[int], floats: list[float]) -> bool:
    if "e" in token:
        return any(abs(x - float(token)) <= 1e-12 + 1e-9 * x for x in floats)
    if "." not in token:
        return int(token) in ints
    decimals, value = len(token.split(".")[1]), Decimal(token)
    step = Decimal(1).scaleb(-decimals)
    return any(
        Decimal(repr(x)).quantize(step, rounding) == value
        for x in floats
        for rounding in (ROUND_HALF_UP, ROUND_HALF_EVEN)
    )


def test_every_number_comes_from_data(built):
    html = (built / "index.html").read_text()
    assert "{{" not in html and "{%" not in html
    page = Text()
    page.feed(html)
    ints, floats = data_numbers()
    tokens = NUMBER.findall(" ".join(page.parts))
    assert len(tokens) > 50  # the scan sees the results
    stray = sorted({t for t in tokens if t not in ALLOWED and not printed_as(t, ints, floats)})
    assert stray == [], f"numbers on the page that are not in _data/: {stray}"


def test_no_placeholders_and_the_repository_link_is_real(built):
    html = (built / "index.html").read_text()
    for placeholder in ("<this repository>", "&lt;this repository&gt;", "TODO", "example.com", "your-name", "OWNER/"):
        assert placeholder not in html, placeholder
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", repo)
    assert f"https://github.com/{repo}" in html


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


MARK = '<x-inj a="1">&'  # an HTML tag, a quote and an ampersand

PENDING: set[str] = set()  # _data files left out of the injection (none: every string is escaped)


def inject(value, key=""):
    """Every string in a _data/ value with MARK appended (ids and file names too: they reach attributes)."""
    if isinstance(value, str):
        return value + MARK
    if isinstance(value, list):
        return [inject(v) for v in value]
    if isinstance(value, dict):
        return {k: inject(v, k) for k, v in value.items()}
    return value


def test_data_strings_are_escaped_everywhere(tmp_path):
    """The site built from _data/ whose every string carries markup: the markup never reaches the page raw."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("_config.yml", "index.md", "_includes", "_layouts"):
        (src / name).symlink_to(ROOT / name)
    (src / "_data").mkdir()
    for path in (ROOT / "_data").iterdir():
        if path.name in PENDING:
            (src / "_data" / path.name).symlink_to(path)
        elif path.suffix == ".json":
            (src / "_data" / path.name).write_text(json.dumps(inject(json.loads(path.read_text()))))
        else:
            (src / "_data" / path.name).write_text(yaml.safe_dump(inject(yaml.safe_load(path.read_text()))))
    dest = tmp_path / "_site"
    env = {**os.environ, "JEKYLL_NO_BUNDLER_REQUIRE": "true"}
    cmd = ["jekyll", "build", "--quiet", "--source", str(src), "--destination", str(dest), "--baseurl", site.BASEURL]
    subprocess.run(cmd, cwd=src, env=env, check=True, capture_output=True, text=True)
    html = (dest / "index.html").read_text()
    assert html.count("&lt;x-inj a=&quot;1&quot;&gt;&amp;") >= 20  # the strings are on the page, escaped
    raw = [html[max(0, i - 120) : i + 20] for i in [m.start() for m in re.finditer("<x-inj", html)]]
    assert raw == [], f"{len(raw)} unescaped, first: {raw[:3]}"
