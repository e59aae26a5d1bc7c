"""The Jekyll site builds under a sub-path and shows the pipeline's numbers."""

import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from pipeline.export import text_export
from tests import site

ROOT = site.ROOT


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The site every test here checks. With SITE_OUT set (CI), it is built there, and that folder is
    the artifact the deploy job publishes: what goes live is byte for byte what was tested."""
    out = os.environ.get("SITE_OUT")
    dest = Path(out).resolve() if out else tmp_path_factory.mktemp("site") / "_site"
    shutil.rmtree(dest, ignore_errors=True)
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
ASSET_TYPES = {
    ".css",
    ".js",
    ".mjs",
    ".wasm",
    ".onnx",
    ".weights",
    ".json",
    ".png",
    ".jpg",
    ".svg",
    ".webp",
    ".html",
}  # .weights: a graph's packed weights (pipeline/packed_weights.py)


def test_only_the_site_is_published(built):
    """The page and its assets, nothing else: no Python, no bench/, no build or config files."""
    files = [p.relative_to(built) for p in built.rglob("*") if p.is_file()]
    for f in files:
        if len(f.parts) == 1:
            assert f.name in PUBLISHED_AT_TOP, f
        else:
            assert f.parts[0] == "assets" and f.suffix in ASSET_TYPES, f
    for private in (
        "pipeline",
        "bench",
        "tests",
        "notebooks",
        "scripts",
        "data",
        "data_extra",
        "cache",
        "node_modules",
        ".venv",
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
    plot_only = sum(size[f] for f in text_export.files(text) + text_export.files(MANIFEST["fusion_head"]))
    poster = size[MANIFEST["poster_encoder"]["file"]]  # Grad-CAM comes from the head's Jacobian: no second file
    assert summary["plot_only_mb"] == round(plot_only / 2**20, 1)  # a plot-only visitor's download
    head = sum(size[f] for f in text_export.files(MANIFEST["fusion_head"]))  # graph + packed weights
    assert summary["head_mb"] == round(head / 2**20, 1)
    encoder = size[text["file"]] + (
        size[text["weights_file"]] if text.get("weights_file") else 0
    )  # graph + packed weights
    assert summary["text_encoder_mb"] == round(encoder / 2**20, 1)
    assert summary["download_mb"] == round((plot_only + poster) / 2**20, 1)  # with a poster (and its heatmaps)
    runtime = summary["runtime_bytes"]  # runtime included: the one size the page and the demo state
    assert summary["first_visit_plot_mb"] == round((plot_only + runtime) / 2**20, 1)
    assert summary["first_visit_poster_mb"] == round((plot_only + poster + runtime) / 2**20, 1)


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

# Numbers the page may print that no _data/ value stands behind: prose facts. Keep this short: a
# number the pipeline knows belongs in _data/ (models.json "page" holds the counts the prose needs).
ALLOWED = {
    "95": "95 % bootstrap intervals: the interval's level, a convention of the write-up",
    "2.0": "the Apache-2.0 licence's name (credits)",
}


def scaled(token: str) -> str:
    """A number as the perturbed data holds it: 7x + 1, printed with the same decimals."""
    if "e" in token:
        return repr(float(token) * 7 + 1)
    if "." in token:
        return f"{float(token) * 7 + 1:.{len(token.split('.')[1])}f}"
    return str(int(token) * 7 + 1)


def perturb(value):
    """Every number in a _data/ value mapped to 7x + 1 (a prime factor and an offset, so zeros move too),
    numbers inside strings included; keys, booleans and the shape stay. The map is increasing, so any
    comparison between two data values (met / not met) comes out the same and the page keeps its shape."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return value * 7 + 1
    if isinstance(value, str):
        return NUMBER.sub(lambda m: scaled(m.group(1)), value)
    if isinstance(value, list):
        return [perturb(v) for v in value]
    return {k: perturb(v) for k, v in value.items()}


def page_numbers(html: str) -> tuple[list[tuple[str, str]], str]:
    """The numbers of the page's visible text, each with its context, and the text with every number as #."""
    page = Text()
    page.feed(html)
    text = " ".join(" ".join(page.parts).split())
    numbers = [(m.group(1), text[max(0, m.start() - 60) : m.end() + 20]) for m in NUMBER.finditer(text)]
    return numbers, re.sub(r"[-−]?" + NUMBER.pattern, "#", text)  # 7x + 1 may flip a small value's sign


def test_every_number_comes_from_data(tmp_path):
    """Built twice, the second time from _data/ with every number perturbed: every number the page prints
    must change (so it is read from _data/, not typed, not a default, not a zero from a missing key)."""
    data = site.site_data()
    original = site.build_source(tmp_path / "a", data)
    changed = site.build_source(tmp_path / "b", {name: perturb(v) for name, v in data.items()})
    assert "{{" not in original and "{%" not in original
    before, shape = page_numbers(original)
    after, shape_after = page_numbers(changed)
    assert len(before) > 100  # the scan sees the results
    if shape != shape_after:  # a sentence that depends on a number's size, not on the data's fields
        a, b = shape.split(". "), shape_after.split(". ")
        diff = [line for line in difflib.unified_diff(a, b, lineterm="", n=0) if line[:1] in "+-"][2:8]
        raise AssertionError("the perturbed page reads differently:\n" + "\n".join(diff))
    stray = [f"{x!r} in …{context}…" for (x, context), (y, _) in zip(before, after) if x == y and x not in ALLOWED]
    assert stray == [], f"{len(stray)} printed numbers that do not come from _data/:\n" + "\n".join(stray[:20])


def test_the_provenance_test_catches_a_typed_number(tmp_path):
    """The check above fails for a number typed into the page: it is the one number that does not move."""
    data = site.site_data()
    typed = "<p>trained for 17 hours</p></main>"
    html = site.build_source(tmp_path / "a", data).replace("</main>", typed)
    other = site.build_source(tmp_path / "b", {k: perturb(v) for k, v in data.items()}).replace("</main>", typed)
    (a, _), (b, _) = page_numbers(html), page_numbers(other)
    assert [x for (x, _), (y, _) in zip(a, b) if x == y and x not in ALLOWED] == ["17"]


def test_a_missing_threshold_prints_na_not_a_number(tmp_path):
    """Without metrics.thresholds the per-genre table says n/a for every genre (a missing key never prints 0)."""
    data = json.loads(json.dumps(site.site_data()))
    assert "n/a" not in site.build_source(tmp_path / "a", data)
    del data["metrics.json"]["thresholds"]
    html = site.build_source(tmp_path / "b", data)
    assert html.count(">n/a<") >= len(data["metrics.json"]["labels"])


def outcome(tmp_path, name: str, change) -> str:
    """The page's text built from _data/ with `change(data)` applied."""
    data = json.loads(json.dumps(site.site_data()))
    change(data)
    page = Text()
    page.feed(site.build_source(tmp_path / name, data))
    return " ".join(" ".join(page.parts).split())


def sentence(text: str, start: str) -> str:
    i = text.index(start)
    return text[i : text.index(".", i + len(start)) + 1]


def test_student_outcome_follows_the_cv_choice(tmp_path):
    """With evaluate's CV-based choice (metrics.student), the sentence follows its `ships` field."""
    cv = {m: {a: {"teacher": 0.6, "student": 0.6} for a in ("micro", "macro")} for m in ("plot", "plot+poster")}

    def choice(ships):
        def change(d):
            d["metrics.json"]["student"] = {"cv": cv, "bound": 0.005, "ships": ships}

        return change

    yes, no = outcome(tmp_path, "yes", choice(True)), outcome(tmp_path, "no", choice(False))
    assert "The student ships" in yes and "The teacher ships" not in yes
    assert "The teacher ships" in no and "outside the bound" in no


def test_balancing_claim_follows_the_data(tmp_path):
    """The balancing caption claims a result only when metrics.json holds a CV comparison, and then the right one."""

    def compared(on, off):
        def change(d):
            d["metrics.json"]["balancing"] = {"on": {"micro_f1": on}, "off": {"micro_f1": off}}

        return change

    none = outcome(tmp_path, "none", lambda d: d["metrics.json"].pop("balancing", None))
    helped = outcome(tmp_path, "helped", compared(0.7, 0.6))
    hurt = outcome(tmp_path, "hurt", compared(0.6, 0.7))
    assert "did not compare balancing" in none and "did not help" not in none
    assert "it helped, and the shipped model uses it" in helped
    assert "it did not help" in hurt


def test_headline_and_encoder_follow_the_data(tmp_path):
    """The KPIs are the shipped files' scores when export measured them (fp32 beside), else say fp32;
    the Models section names the encoder the manifest ships."""
    with_int8 = outcome(tmp_path, "int8", lambda d: None)
    without = outcome(tmp_path, "fp32", lambda d: d["models.json"]["shipped"].pop("shipped"))
    about = "Two sets of real movies"  # the Data section's first words: the KPIs come before them
    assert "shipped files" in with_int8.split(about)[0]
    assert "shipped files" not in without.split(about)[0] and "(test, fp32;" in without
    assert "did not score the shipped files" in without


def test_extra_data_and_errors_sections_render_from_whatever_exists(tmp_path):
    """A run without extra rows, paired margins or an error analysis says so instead of printing zeros."""

    def strip(d):
        for key in ("extra", "extra_steps"):
            d["curation.json"].pop(key, None)
        for c in d["metrics.json"]["comparison"].values():
            c.pop("paired_points_ci", None)
        d.pop("errors.json", None)

    text = outcome(tmp_path, "bare", strip)
    assert "Not used in this run" in text
    assert "recorded no paired bootstrap" in text
    assert "has no error analysis" in text


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


def test_every_image_has_width_and_height(built):
    """So the page does not jump while images load (their sizes come from _data/figures.json)."""
    tags = re.findall(r"<img\b[^>]*>", (built / "index.html").read_text())
    assert len(tags) >= 20
    missing = [t[:120] for t in tags if not (re.search(r'\swidth="\d+"', t) and re.search(r'\sheight="\d+"', t))]
    assert missing == [], f"{len(missing)} images without width/height: {missing[:3]}"


PHONE = {"width": 390, "height": 844}


@pytest.mark.browser
def test_phone_thumbnails_tables_and_figures(built, tmp_path):
    """At 390 px: Grad-CAM thumbnails take a third of their row each (site.js wraps them in a.zoom), no
    table hides a column without showing that it scrolls (and scrolling reaches its last column), and a
    figure opens at its natural size in the lightbox (so its labels are as large as drawn)."""
    from playwright.sync_api import sync_playwright

    server = site.Server(built, tmp_path / "www")
    try:
        with sync_playwright() as p:
            browser = site.launch(p)
            page = browser.new_page(viewport=PHONE)
            page.goto(server.url)
            page.wait_for_function("document.querySelectorAll('main a.zoom').length > 10")
            cams = page.evaluate("""[...document.querySelectorAll('.cam-row')].map((row) => {
                const imgs = [...row.querySelectorAll('img')];
                return {row: row.getBoundingClientRect().width, widths: imgs.map((i) => i.getBoundingClientRect().width)};
            })""")
            assert cams, "no Grad-CAM rows"
            for cam in cams:
                n = len(cam["widths"])
                for w in cam["widths"]:
                    assert w >= (cam["row"] - 4 * (n - 1)) / n - 2 and w >= 90, cam
            tables = page.evaluate("""[...document.querySelectorAll('main .table-wrap')].filter((w) => w.checkVisibility()).map((w) => {
                const hint = w.previousElementSibling;
                const wide = w.scrollWidth > w.clientWidth + 1;
                w.scrollLeft = w.scrollWidth;
                const box = w.getBoundingClientRect();
                const last = [...w.querySelectorAll('tr')].map((r) => r.lastElementChild).filter(Boolean)
                    .map((c) => c.getBoundingClientRect().right);
                const reached = last.every((r) => r <= box.right + 1);
                w.scrollLeft = 0;
                return {label: w.getAttribute('aria-label'), wide, reached,
                        hinted: !!(hint && hint.classList.contains('scroll-hint') && hint.checkVisibility())};
            })""")
            assert len(tables) >= 8
            for t in tables:
                assert t["reached"], f"{t['label']}: its last column cannot be scrolled into view"
                assert not t["wide"] or t["hinted"], f"{t['label']}: wider than the screen with no scroll hint"
            page.locator("figure a.zoom:has(img[src$='cooccurrence.png'])").first.click()
            page.wait_for_function("document.querySelector('dialog.lightbox').open")
            page.wait_for_function("document.querySelector('dialog.lightbox img').complete")
            shown = page.evaluate("""(() => { const d = document.querySelector('dialog.lightbox'), i = d.querySelector('img');
                return {width: i.getBoundingClientRect().width, natural: i.naturalWidth, scrolls: d.scrollWidth > d.clientWidth}; })()""")
            assert shown["natural"] > PHONE["width"] and shown["width"] >= shown["natural"] - 1, shown
            assert shown["scrolls"], "the full-size figure cannot be panned"
            page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
            browser.close()
    finally:
        server.stop()


@pytest.mark.parametrize("chosen", [10.0, "inf"])
def test_the_pull_table_marks_the_shipped_pull_once_per_mode(tmp_path, chosen):
    """#threshold-pull-cv: exactly one row per mode says "ships", the one whose pull the run chose, for a
    number (10.0) as for "inf"."""
    data = json.loads(json.dumps(site.site_data()))
    metrics = data["metrics.json"]
    metrics["threshold_shrink"] = dict.fromkeys(metrics["threshold_shrink_cv"], chosen)
    html = site.build_source(tmp_path / "site", data)
    table = html[html.index('id="threshold-pull-cv"') :]
    table = table[: table.index("</table>")]
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td>.*?<td>([^<]*)</td></tr>", table, re.S)
    marked = [(mode, pull) for mode, pull, ships in rows if ships == "ships"]
    assert sorted(marked) == sorted((m, str(chosen)) for m in metrics["threshold_shrink_cv"])
