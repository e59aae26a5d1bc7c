"""Figures: SVG text fits its boxes (by the width estimate the layout uses, and as Chromium renders it),
the SVGs stay readable on a 390 px phone, and the tiny run draws every figure the site shows."""

import re
import xml.etree.ElementTree as ET

import pytest

from pipeline.stages.figures import architecture, scheme, style
from tests.conftest import ROOT, cli

SVG = "{http://www.w3.org/2000/svg}"
MIN_PHONE_FONT = 8.5  # CSS px: the smallest text an SVG may shrink to on a 390 px phone


def manifest(text_dim=384, image_dim=1280, labels=18, max_len=256, size=224) -> dict:
    return {
        "labels": [f"Genre {i}" for i in range(labels)],
        "text_encoder": {"dim": text_dim, "max_len": max_len},
        "poster_encoder": {"dim": image_dim, "preprocessing": {"resize_in_model": [size, size]}},
        "fusion_head": {"heads": {"plot": "plot_head", "plot+poster": "fusion"}},
        "thresholds": {"plot": [0.34] * labels, "plot+poster": [0.05 * (i % 7) for i in range(labels)]},
        "bag_of_words": {"terms": 8000, "blend": {"plot": 0.3, "plot+poster": 0.25}},
    }


@pytest.mark.parametrize(
    "cuts, says",
    [
        ({"plot": [0.34] * 3, "plot+poster": [0.33] * 3}, "one threshold per input mode (0.34 plot only, 0.33 plot"),
        ({"plot": [0.34] * 3, "plot+poster": [0.3, 0.4, 0.5]}, "per-genre thresholds plot + poster"),
    ],
)
def test_the_architecture_says_the_thresholds_the_manifest_ships(cuts, says):
    spec = {**manifest(labels=3), "thresholds": cuts}
    assert says in architecture.svg(spec, 64).replace("\u00a0", " ")


def test_the_architecture_says_the_bag_of_words_weights():
    said = architecture.svg(manifest(), 64).replace("\u00a0", " ")
    assert "8000 terms" in said and "weight 0.3 / 0.25" in said


SVGS = {
    "architecture": architecture.svg(manifest(), 256),
    "scheme-extra": scheme.svg_extra(14804, [1058, 1091, 1067], 565, 2, 7),
    # stress cases: their text must still fit its boxes, though they may shrink below legible on a phone
    "architecture-stress": architecture.svg(manifest(4096, 2048, 120, 8192, 1024), 4096),
    "scheme-extra-stress": scheme.svg_extra(1234567, [99999] * 5, 123456, 10, 250),
}


def parse(svg: str):
    root = ET.fromstring(svg)
    _, _, vw, vh = map(float, root.get("viewBox").split())
    rects = [
        {k: float(r.get(k)) for k in ("x", "y", "width", "height")}
        for r in root.iter(SVG + "rect")
        if r.get("x") is not None  # the page background has no position
    ]
    texts = []
    for t in root.iter(SVG + "text"):
        size, x, y = float(t.get("font-size")), float(t.get("x")), float(t.get("y"))
        w = style.text_width(t.text, size)
        left = {"middle": x - w / 2, "start": x, "end": x - w}[t.get("text-anchor", "start")]
        texts.append({"text": t.text, "size": size, "left": left, "right": left + w, "top": y - size, "bottom": y})
    return root, vw, vh, rects, texts


def container(rects, box):
    """The smallest rect holding the middle of a text's box, or None (then it must fit the picture)."""
    cx, cy = (box["left"] + box["right"]) / 2, (box["top"] + box["bottom"]) / 2
    inside = [r for r in rects if r["x"] <= cx <= r["x"] + r["width"] and r["y"] <= cy <= r["y"] + r["height"]]
    return min(inside, key=lambda r: r["width"] * r["height"], default=None)


def misfits(rects, boxes, vw, vh) -> list[str]:
    out = []
    for b in boxes:
        r = container(rects, b) or {"x": 0, "y": 0, "width": vw, "height": vh}
        if (
            b["left"] < r["x"]
            or b["right"] > r["x"] + r["width"]
            or b["top"] < r["y"]
            or b["bottom"] > r["y"] + r["height"]
        ):
            out.append(
                f"{b['text']!r} [{b['left']:.0f}, {b['right']:.0f}] outside [{r['x']:.0f}, {r['x'] + r['width']:.0f}]"
            )
    return out


@pytest.mark.parametrize("name", SVGS)
def test_svg_text_fits_its_boxes(name):
    """Every text, at CHAR_EM × font size per character (wider than common sans-serif fonts), lies
    inside the box it is drawn in, or inside the picture."""
    _, vw, vh, rects, texts = parse(SVGS[name])
    assert texts and not misfits(rects, texts, vw, vh), misfits(rects, texts, vw, vh)


@pytest.mark.parametrize("name", SVGS)
def test_svg_is_readable_on_a_phone(name):
    """Shown as an <img> with max-width 100 %, the SVG scales to at most the phone's width: its
    smallest text must stay legible there, and it never grows on desktop past its natural size."""
    root, vw, _, _, texts = parse(SVGS[name])
    natural = float(root.get("width"))
    shown = min(natural, style.PHONE)
    smallest = min(t["size"] for t in texts) * shown / vw
    print(f"{name}: viewBox width {vw:.0f}, natural {natural:.0f} px, smallest text on a phone {smallest:.1f} px")
    if not name.endswith("stress"):
        assert smallest >= MIN_PHONE_FONT


def test_svg_text_fits_as_rendered(tmp_path):
    """The same check with the widths Chromium measures in the fonts it really has."""
    from playwright import sync_api

    from tests import site

    with sync_api.sync_playwright() as p:
        browser = site.launch(p)
        page = browser.new_page()
        for name, svg in SVGS.items():
            page.set_content(f"<!DOCTYPE html><body style='margin:0'>{svg}</body>")
            boxes = page.evaluate(
                """() => [...document.querySelectorAll('text')].map(t => {
                    const b = t.getBBox();
                    return {text: t.textContent, size: +t.getAttribute('font-size'),
                            left: b.x, right: b.x + b.width, top: b.y, bottom: b.y + b.height,
                            estimate: t.textContent.length * 0.6 * t.getAttribute('font-size')};
                })"""
            )
            _, vw, vh, rects, _ = parse(svg)
            widest = max((b["right"] - b["left"]) / b["estimate"] for b in boxes if b["text"].strip())
            print(f"{name}: rendered width / estimate at most {widest:.2f}")
            assert not misfits(rects, boxes, vw, vh), misfits(rects, boxes, vw, vh)
        browser.close()


def site_figures() -> set[str]:
    """Figure files either page references by name (gradcam/ and thumbs/ come from _data lists)."""
    pages = [ROOT / "index.md", ROOT / "methods.md", *(ROOT / "_includes").glob("*.html")]
    found = set()
    for p in pages:
        text = p.read_text()
        found |= set(re.findall(r"/assets/figures/([\w./-]+\.(?:png|svg|html))", text))
        found |= set(re.findall(r'include (?:img|figure)\.html f="([\w./-]+\.(?:png|svg))"', text))
    return found


def test_tiny_run_draws_every_figure_the_site_shows(tiny):
    assert len(site_figures()) >= 14 and "errors/confusion.png" in site_figures()
    missing = sorted(f for f in site_figures() if not (tiny.figures / f).is_file())
    assert not missing, f"referenced by the site but not drawn: {missing}"
    facts = tiny.json("figures.json")
    for f in facts["files"]:
        assert (tiny.figures / f).is_file(), f
        if f.endswith(".png"):
            assert (tiny.figures / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
    assert facts["finetune_epochs_run"] >= 1 and facts["fusion_epochs_chosen"] >= 1
    assert 0 <= facts["expected_calibration_error"] <= 1
    for name in ("architecture.svg", "crossfit.svg"):  # crossfit.svg: the training scheme
        _, vw, vh, rects, texts = parse((tiny.figures / name).read_text())
        assert not misfits(rects, texts, vw, vh), (name, misfits(rects, texts, vw, vh))


def test_figures_rerun_is_cached(tiny):
    proc = cli(*tiny.args("figures"))
    assert re.search(r"^\[figures\] cached: ", proc.stdout, re.M), proc.stdout[-2000:]


def test_tiny_run_publishes_the_error_analysis(tiny):
    """errors.py runs inside publish: _data/errors.json from the test split, its figure and thumbnails."""
    err = tiny.json("errors.json")
    metrics = tiny.json("metrics.json")
    assert err["test_movies"] == metrics["split"]["test"]
    assert {g["genre"] for g in err["genres"]} == set(metrics["labels"])
    effect = err["poster"]
    assert effect["helped"] + effect["hurt"] + effect["same"] == effect["movies"]
    for pair in err["pairs"]:
        assert pair["true"] != pair["predicted"] and 0 < pair["movies"] <= pair["of"]
    for ex in effect["helped_examples"] + effect["hurt_examples"]:
        assert ex["truth"] and ex["plot"] != ex["plot+poster"]
        assert ex["thumb"] is None or (tiny.figures / "errors" / ex["thumb"]).is_file()
    assert (tiny.figures / "errors/confusion.png").read_bytes()[:4] == b"\x89PNG"
    lengths = err["lengths"]
    assert lengths["window"] == tiny.json("models.json")["text_encoder"]["max_len"]
    assert lengths["max_tokens"] >= lengths["longest"][-1]["tokens"] and lengths["over_window"] >= 0


def test_plots_script_redraws_from_cache_and_never_trains(tiny, tmp_path):
    """notebooks/plots.py after a run: redraws from cache/; on an empty cache: a clear error, nothing trained."""
    import os
    import subprocess
    import sys

    args = [str(a) for a in tiny.args("figures")[1:]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    script = [sys.executable, str(ROOT / "notebooks/plots.py")]
    done = subprocess.run([*script, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    trained = [line for line in done.stdout.splitlines() if "running ->" in line]
    assert all(line.startswith(("[figures]", "[errors]")) for line in trained), trained
    empty = args.copy()
    empty[empty.index("--work") + 1] = str(tmp_path / "empty-cache")
    fresh = subprocess.run([*script, *empty], capture_output=True, text=True, env=env, cwd=ROOT)
    assert fresh.returncode != 0 and "has no cached output" in fresh.stderr + fresh.stdout
    assert "running ->" not in fresh.stdout


def test_error_analysis_counts_on_a_hand_made_split(tmp_path):
    """errors.analyse on four test movies whose outcomes are known by hand."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from pipeline.stages import errors

    labels = ["Action", "Comedy", "Documentary"]
    poster = tmp_path / "p.jpg"
    Image.new("RGB", (185, 278), (200, 40, 30)).save(poster)
    movies = pd.DataFrame(
        {
            "tmdb_id": [1, 2, 3, 4, 5, 6],
            "title": ["a", "b", "c", "d", "dev1", "dev2"],
            "release_date": ["2001-01-01"] * 6,
            "genres": ["Action", "Comedy", "Action|Comedy", "Documentary", "Action", "Comedy"],
            "overview": ["one two three"] * 6,
            "poster": [str(poster), str(poster), "", str(poster), "", ""],
            "split": ["test"] * 4 + ["dev"] * 2,
            "fold": [-1] * 4 + [0, 1],
        }
    )
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    # plot only: movie 1 gets Action + Comedy (a Comedy false positive); the poster removes it (helped);
    # movie 2 right with the plot, the poster adds Action (hurt); movie 4 (Documentary) never right
    plot = np.array([[0.9, 0.8, 0.1], [0.1, 0.9, 0.1], [0.9, 0.9, 0.1], [0.2, 0.9, 0.3], [0.9, 0, 0], [0, 0.9, 0]])
    both = np.array([[0.9, 0.2, 0.1], [0.8, 0.9, 0.1], [0.9, 0.9, 0.1], [0.2, 0.9, 0.3], [0.9, 0, 0], [0, 0.9, 0]])
    # a peer sure of Action on every test movie, and right on both dev movies (its cut: between 0.05 and 0.95)
    peer = np.array([[0.95, 0.05, 0.05]] * 4 + [[0.95, 0.05, 0.05], [0.05, 0.95, 0.05]])
    probs = {"fusion_plot_only": plot, "fusion": both, "peer": peer}
    metrics = {
        "comparison": {"plot": {"shipped": "fusion_plot_only"}, "plot+poster": {"shipped": "fusion"}},
        "peers": {"best": {"plot": "peer", "plot+poster": "peer"}},
        "thresholds": {m: dict.fromkeys(labels, 0.5) for m in ("plot", "plot+poster")},
    }
    out = tmp_path / "out"
    out.mkdir()
    shipped = {"plot": plot[:4], "plot+poster": both[:4]}  # the shipped files' answers on the four test movies
    r = errors.analyse(movies, labels, y, shipped, probs, metrics, None, 256, out, shrinks=(np.inf,))
    assert r["test_movies"] == 4
    pairs = {(p["true"], p["predicted"]): p["movies"] for p in r["pairs"]}
    assert pairs == {("Comedy", "Action"): 1, ("Documentary", "Comedy"): 1}  # with the poster
    effect = r["poster"]
    assert (effect["movies"], effect["helped"], effect["hurt"], effect["same"]) == (3, 1, 1, 1)
    assert effect["genre_changes"] == {
        "added_right": 0,
        "removed_wrong": 1,
        "added_wrong": 1,
        "removed_right": 0,
        "good": 1,
        "bad": 1,
    }
    assert [e["title"] for e in effect["helped_examples"]] == ["a"] and effect["helped_examples"][0]["thumb"]
    assert [e["title"] for e in effect["hurt_examples"]] == ["b"]
    assert r["never_right"] == ["Documentary"]
    doc = next(g for g in r["genres"] if g["genre"] == "Documentary")
    assert doc["form"] and "form" in doc["reasons"] and doc["missed"] == 1
    assert (out / "confusion.png").is_file() and (out / "thumbs/1.jpg").is_file()
    # the margin over the peer, on the shipped answers: plot only 4 right of 6 said (F1 8/11), the peer 2 of 4
    # (4/9); plot + poster 4 of 5 said, 4 of 6 wanted (8/11)
    margin = r["shipped_margin"]
    assert margin["plot"]["best_peer"] == "peer"
    assert margin["plot"]["micro"]["diff"] == pytest.approx(100 * (8 / 11 - 4 / 9))
    assert margin["plot+poster"]["micro"]["diff"] == pytest.approx(100 * (8 / 11 - 4 / 9))


def test_figure_text_is_at_least_9_px_at_natural_size():
    """On a phone the lightbox shows a PNG at its natural size (site.css), so every text drawn in the
    figures must be >= 9 px there: points × dpi / 72 for every font size the drawing code sets."""
    import matplotlib

    dpi = style.plt.rcParams["figure.dpi"]
    sources = [*(ROOT / "pipeline/stages/figures").glob("*.py"), ROOT / "pipeline/stages/errors.py"]
    sizes = [float(s) for p in sources for s in re.findall(r"fontsize=(\d+(?:\.\d+)?)", p.read_text())]
    sizes += [matplotlib.rcParams[k] for k in ("font.size", "legend.fontsize")]
    assert sizes and min(sizes) * dpi / 72 >= 9, (min(sizes), dpi)
