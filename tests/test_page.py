"""The write-up in headless Chromium: the story page's length and order (the demo within two screens, at most
1,800 words of body text), its glossary and skip link, figures legible on a phone, and the demo's accessible
and edge-case behaviour (the genres in a live region, a poster changed after Predict, offline without the
poster model, the download note after a download, words in scripts written without spaces).

Body words, as counted here (BODY_WORDS): every word of visible text inside <main> of the story page (text
split on white space), except the demo widget (#demo-app: its form controls, example buttons, download note
and results, which are interface, not writing) and code blocks (<pre>: the shell commands under Reproduce).
Tables, table captions, figure captions, the glossary and the credits all count; so does the demo's one-line
introduction. The methods page has no word limit.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests import site

pytestmark = pytest.mark.browser
ROOT = site.ROOT
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
PLOT = "Two rival chefs fall in love while competing for a small restaurant on the Italian coast."
GLOSSARY = ["micro-f1", "macro-f1", "fold", "out-of-fold", "fp32", "4-bit", "gptq", "threshold", "peer"]
# how each term is written in the text: the first match outside the glossary must be a link to its definition
FORMS = {
    "micro-f1": r"micro F1",
    "macro-f1": r"macro F1",
    "fold": r"\bfolds?\b",
    "out-of-fold": r"out[- ]of[- ]fold",
    "fp32": r"\bfp32\b",
    "4-bit": r"\b4-bit\b",
    "gptq": r"\bGPTQ\b",
    "threshold": r"\bthresholds?\b",
    "peer": r"\b(peers?|baselines?)\b",
}

BODY_WORDS = """() => {
  const main = document.querySelector('main');
  const skip = [...main.querySelectorAll('#demo-app, pre')];
  let n = 0;
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  for (let t = walker.nextNode(); t; t = walker.nextNode()) {
    if (skip.some((s) => s.contains(t))) continue;
    const el = t.parentElement;
    if (!el.checkVisibility() || el.closest('script, style, [hidden], .sr-only')) continue;
    n += (t.textContent.match(/\\S+/g) || []).length;
  }
  return n;
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("page")
    site.build(base / "_site")
    srv = site.Server(base / "_site", base / "www")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = site.launch(p)
        yield b
        b.close()


def open_page(browser, server, path="", viewport=DESKTOP, **kw):
    context = browser.new_context(viewport=viewport, **kw)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(server.url + path)
    return context, page


def ready(page):
    page.wait_for_selector("#demo-app[data-ready='1']", timeout=60_000)


def run_demo(page, plot=PLOT, mode="plot"):
    page.fill("#plot", plot)
    page.evaluate("delete document.getElementById('demo-app').dataset.result")
    page.click("#predict")
    page.wait_for_selector("#demo-app[data-result]", timeout=180_000)
    got = json.loads(page.get_attribute("#demo-app", "data-result"))
    assert got["mode"] == mode
    return got


def poster(path: Path, colour, seed: int):
    im = Image.new("RGB", (200, 300), colour)
    d = ImageDraw.Draw(im)
    for k in range(8):
        x, y = (37 * (k + seed)) % 180, (53 * (k + 2 * seed)) % 280
        d.ellipse([x, y, x + 40, y + 40], fill=((90 * k) % 256, (40 * seed) % 256, (160 + 10 * k) % 256))
    im.save(path, quality=92)
    return str(path)


@pytest.fixture(scope="module")
def posters(tmp_path_factory):
    folder = tmp_path_factory.mktemp("posters")
    return poster(folder / "red.jpg", (200, 30, 30), 1), poster(folder / "blue.jpg", (20, 60, 200), 2)


# ---- the story page: length, order, words, glossary, skip link -------------------------------------------


def test_demo_within_two_screens_and_the_page_within_ten(browser, server):
    """At 1366×900 the demo's section (and its plot box) starts within the first two screens, and the whole
    story page is at most ten screens tall. The phone's count is printed for the record."""
    context, page = open_page(browser, server)
    demo = page.evaluate("document.getElementById('demo').getBoundingClientRect().top + scrollY")
    plot = page.evaluate("document.getElementById('plot').getBoundingClientRect().top + scrollY")
    height = page.evaluate("document.documentElement.scrollHeight")
    context.close()
    assert demo < 2 * DESKTOP["height"] and plot < 2 * DESKTOP["height"], (demo, plot)
    assert height <= 10 * DESKTOP["height"], f"{height / DESKTOP['height']:.1f} screens"
    context, page = open_page(browser, server, viewport=PHONE)
    phone = page.evaluate("document.documentElement.scrollHeight") / PHONE["height"]
    context.close()
    print(f"story page: {height / DESKTOP['height']:.1f} screens at 1366×900, {phone:.1f} at 390×844")


def test_body_text_is_at_most_1800_words(browser, server):
    context, page = open_page(browser, server)
    words = page.evaluate(BODY_WORDS)
    context.close()
    print(f"story page body words (module docstring's definition): {words}")
    assert 300 < words <= 1800, words


def test_each_glossary_term_is_defined_and_its_first_use_links_there(browser, server):
    """Every term has a definition (dt#g-TERM, dd); its first use on the story page outside the glossary is a
    link to it (when the story uses it at all), and following the link shows the definition."""
    context, page = open_page(browser, server)
    found = page.evaluate(
        """(forms) => {
          const main = document.querySelector('main'), glossary = document.querySelector('dl.glossary');
          const out = {};
          for (const [term, form] of Object.entries(forms)) {
            const re = new RegExp(form, 'i');
            const dt = document.getElementById('g-' + term);
            const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
            let first = null;
            for (let t = walker.nextNode(); t; t = walker.nextNode()) {
              if (glossary.contains(t) || t.parentElement.closest('#demo-app, pre, code, .sr-only')) continue;
              if (re.test(t.textContent)) { first = t; break; }
            }
            const link = first?.parentElement.closest('a');
            out[term] = {
              defined: !!dt && dt.tagName === 'DT' && (dt.nextElementSibling?.textContent.trim().split(/\\s+/).length ?? 0) >= 5,
              used: !!first, text: first?.textContent.trim().slice(0, 60) ?? null,
              linked: !!link && link.getAttribute('href').endsWith('#g-' + term),
            };
          }
          return out;
        }""",
        FORMS,
    )
    for term in GLOSSARY:
        assert found[term]["defined"], f"{term}: no definition"
        assert not found[term]["used"] or found[term]["linked"], (
            f"{term}: first use not linked: {found[term]['text']!r}"
        )
    page.locator("a.term[href='#g-macro-f1']").first.click()
    page.wait_for_function("location.hash === '#g-macro-f1'")
    # the page scrolls smoothly: the definition comes into view
    page.wait_for_function(
        "(() => { const r = document.getElementById('g-macro-f1').getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; })()"
    )
    context.close()


def test_the_skip_link_focuses_the_demo(browser, server):
    """The first Tab reaches "Skip to the demo" (shown when focused); Enter moves the focus to the demo, and
    the next Tab to the plot box."""
    context, page = open_page(browser, server)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    box = page.locator("a.skip").bounding_box()
    assert box["y"] >= 0 and box["height"] > 10  # on screen while focused
    page.keyboard.press("Enter")
    page.wait_for_function("document.activeElement.id === 'demo'")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "plot"
    context.close()


# ---- figures on a phone ----------------------------------------------------------------------------------


def smallest_png_label_px() -> float:
    """The smallest text the figure code draws, in pixels at the PNGs' natural size: its smallest fontsize
    (points) at style.py's dpi."""
    code = [p.read_text() for p in ROOT.glob("pipeline/**/figures/*.py")]
    dpi = int(re.search(r'"figure\.dpi":\s*(\d+)', "".join(code)).group(1))
    sizes = [float(x) for text in code for x in re.findall(r"fontsize=(\d+(?:\.\d+)?)", text)]
    return min(sizes) * dpi / 72


def svg_smallest_label(name: str) -> tuple[float, float]:
    """(smallest font-size, viewBox width) of an SVG figure."""
    text = (ROOT / "assets/figures" / name).read_text()
    sizes = [float(x) for x in re.findall(r'font-size="(\d+(?:\.\d+)?)"', text)]
    return min(sizes), float(re.search(r'viewBox="[\d.]+ [\d.]+ ([\d.]+) [\d.]+"', text).group(1))


@pytest.mark.parametrize("path", ["", "methods/"])
@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390", "1366"])
def test_figure_labels_are_at_least_9_px_on_screen(browser, server, path, viewport):
    """Every inline figure's labels are >= 9 CSS px as shown: a PNG is never shown below 9 px / its smallest
    drawn label of its natural size (on a phone it keeps its natural size and scrolls sideways in its box);
    an SVG that fits the screen does so with its smallest font >= 9 px. The page itself never scrolls sideways."""
    png_min = smallest_png_label_px()
    context, page = open_page(browser, server, path, viewport=viewport)
    page.evaluate(
        "Promise.all([...document.querySelectorAll('.fig-scroll img')].map((i) => { i.loading = 'eager'; return i.decode().catch(() => 0); }))"
    )
    figures = page.evaluate(
        """[...document.querySelectorAll('.fig-scroll img')].map((i) => ({
            src: i.getAttribute('src'), shown: i.getBoundingClientRect().width, natural: i.naturalWidth,
            box: i.closest('.fig-scroll').clientWidth, scrolls: i.closest('.fig-scroll').scrollWidth > i.closest('.fig-scroll').clientWidth + 1}))"""
    )
    overflow = page.evaluate("document.documentElement.scrollWidth - innerWidth")
    context.close()
    assert figures and overflow <= 1
    small = []
    for f in figures:
        name = f["src"].split("/assets/figures/")[1]
        if name.endswith(".svg"):
            font, view = svg_smallest_label(name)
            px = font * f["shown"] / view
        else:
            px = png_min * f["shown"] / f["natural"]
        if px < 9:
            small.append(f"{name}: smallest label {px:.1f} px on screen ({f})")
    assert small == [], "\n".join(small)


# ---- the demo ----------------------------------------------------------------------------------------------


def test_the_live_region_announces_the_genres(browser, server):
    """Screen readers hear the genres (a polite live region), not the timing line."""
    context, page = open_page(browser, server, "#demo")
    ready(page)
    assert page.get_attribute("#announce", "aria-live") == "polite"
    assert page.get_attribute("#timing", "aria-live") is None
    got = run_demo(page)
    page.wait_for_function("document.getElementById('announce').textContent.startsWith('Predicted genres:')")
    said = page.evaluate("document.getElementById('announce').textContent")
    assert all(g in said for g in got["genres"]) and "plot only" in said, said
    assert "Genres in" not in said and "Genres in" in page.inner_text("#timing")
    assert page.errors == []
    context.close()


def test_a_poster_changed_during_a_prediction_restarts_it_with_that_poster(browser, server, posters):
    """Poster A, Predict, then poster B while the first run is still loading its models: the result shown is
    B's (the same probabilities as a prediction made with B from the start), never A's or the plot's alone.
    A poster changed after a result is shown withdraws that result."""
    red, blue = posters
    context, page = open_page(browser, server, "#demo")  # a cold start: the first run loads the models
    ready(page)
    page.fill("#plot", PLOT)
    page.set_input_files("#poster", red)
    page.wait_for_selector("#poster-preview:not([hidden])")
    page.click("#predict")
    assert page.get_attribute("#demo-app", "aria-busy") == "true"
    page.set_input_files("#poster", blue)  # while the first prediction runs
    page.wait_for_selector("#demo-app[data-result]", timeout=180_000)
    swapped = json.loads(page.get_attribute("#demo-app", "data-result"))
    assert swapped["mode"] == "plot+poster"
    assert int(page.get_attribute("#demo-app", "data-runs")) == 2  # the first run was dropped, a second started
    direct = run_demo(page, PLOT, "plot+poster")  # blue is still on screen
    assert swapped == direct

    # a result on screen, then another poster: the result is withdrawn until Predict is pressed again
    page.set_input_files("#poster", red)
    page.wait_for_selector("#demo-results", state="hidden")
    assert page.get_attribute("#demo-app", "data-result") is None
    assert "poster changed" in page.inner_text("#status")
    page.click("#clear-poster")
    assert page.locator("#demo-results").is_hidden()
    assert page.errors == []
    context.close()


def test_offline_without_the_poster_model_answers_from_the_plot(browser, server, posters):
    """After a plot-only prediction (its models now stored), the note no longer announces their download;
    then offline, with a poster whose model was never downloaded: the demo says so and shows the plot-only
    answer, labelled as such, instead of an error."""
    red, _ = posters
    context, page = open_page(browser, server, "#demo")
    ready(page)
    before = page.inner_text("#download")
    assert "The first prediction downloads" in before
    run_demo(page)
    page.wait_for_function(
        "!document.getElementById('download').textContent.includes('The first prediction downloads')"
    )
    after = page.inner_text("#download")
    assert "Stored in this browser" in after and "nothing for a plot" in after, after

    context.set_offline(True)
    page.set_input_files("#poster", red)
    page.wait_for_selector("#poster-preview:not([hidden])")
    got = run_demo(page, PLOT, "plot")
    note = page.inner_text("#fallback")
    assert page.locator("#fallback").is_visible() and "offline" in note and "plot alone" in note, note
    assert "Something went wrong" not in page.inner_text("#status")
    assert got["genres"]
    context.close()


@pytest.mark.parametrize(
    "text,says",
    [
        # 20 Chinese characters in a few words, no spaces: more words than curation's minimum, but one "word"
        # between spaces: the caution explains that, with the count a reader would make
        ("一个年轻的厨师在海边的小镇开了一家餐厅，爱上了竞争对手。", "written mostly without spaces"),
        ("你好", "this text has 1 word;"),
    ],
)
def test_words_in_scripts_without_spaces_are_counted(browser, server, text, says):
    context, page = open_page(browser, server, "#demo")
    ready(page)
    run_demo(page, text)
    caution = page.inner_text("#caution")
    assert says in caution, caution
    if "without spaces" in says:
        words = int(re.search(r"this text has (\d+) words", caution).group(1))
        assert words > 6, caution
    context.close()


@pytest.mark.parametrize("path", ["", "methods/"])
@pytest.mark.parametrize("width", [390, 1366])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_violation_on_either_page(browser, server, path, width, scheme):
    """axe-core on each page as it loads (the story page after a prediction is tests/test_browser.py's)."""
    axe = ROOT / "node_modules/axe-core/axe.min.js"
    if not axe.exists() or not shutil.which("chromium"):
        pytest.skip("axe-core or Chromium not installed")
    context, page = open_page(browser, server, path, viewport={"width": width, "height": 900}, color_scheme=scheme)
    page.evaluate(
        "Promise.all([...document.images].map((i) => { i.loading = 'eager'; return i.decode().catch(() => 0); }))"
    )
    page.add_script_tag(path=str(axe))
    report = page.evaluate("axe.run(document, { resultTypes: ['violations'] })")
    context.close()
    bad = [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:5]}" for v in report["violations"]]
    assert bad == [], "\n".join(bad)
