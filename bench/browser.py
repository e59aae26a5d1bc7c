"""Demo speed in headless Chromium against native onnxruntime, on this machine. Figures printed, never asserted.

  .venv/bin/python -m bench.browser [--runs 10] [--isolated]      (make bench)

For each text encoder the manifest lists ("text_encoder"; also any "NAME_text_encoder", e.g. the
teacher or the student, selected in the demo by ?text=NAME) and each input mode (plot only, plot + poster):
  bytes        downloaded by a first visit up to the first genres (models + runtime + the demo's scripts)
  cold         page load → first genres shown (a fresh browser profile: nothing cached)
  return       page load → genres on a second visit in the same profile (models from Cache Storage)
  warm         Predict click → genres shown, median of --runs (a new poster each run in plot + poster mode)
  explanation  Predict click → sentence explanation (and poster heatmap) finished, median
  longest task the longest main-thread task (PerformanceObserver longtask) while predicting
  model        the worker's own inference time (text [+ poster] + head), median; native = onnxruntime
               in Python, one thread, on the same inputs; browser/native their ratio
Single-threaded wasm, as on GitHub Pages (GitHub Pages cannot send cross-origin isolation headers);
--isolated adds a cross-origin isolated run, where onnxruntime-web may use threads.
"""

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from pipeline import image
from pipeline.text import encode
from tests import site
from tests.tiny_data import poster

ROOT = Path(__file__).resolve().parent.parent
PLOT = (
    "A retired detective returns to the fishing village where she grew up after her brother is found drowned. "
    "The police call it an accident, but the harbour keeps its own secrets. Her old friends will not talk. "
    "A storm cuts the village off, and a second body washes up on the beach."
)
LONGTASKS = """
window.__long = [];
new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); }).observe({ type: "longtask" });
"""


def native_ms(models: Path, part: str, poster_path: Path, runs: int) -> dict:
    """Median ms of onnxruntime, one thread: plot only (tokenize + text + head), plot + poster (+ poster)."""
    spec = json.loads((models / "manifest.json").read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1

    def session(name):
        return ort.InferenceSession(str(models / name), opts, providers=["CPUExecutionProvider"])

    enc = spec[part]
    text, head, post = (
        session(enc["file"]),
        session(spec["fusion_head"]["file"]),
        session(spec["poster_encoder"]["file"]),
    )
    tok = Tokenizer.from_file(str(models / enc["tokenizer"]))
    tok.no_padding()
    tok.no_truncation()
    pixels = image.load_image(poster_path)
    x = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)
    dim = spec["poster_encoder"]["dim"]

    def predict(with_poster):
        ids = np.array([encode(tok, PLOT, enc["max_len"])], dtype=np.int64)
        t = text.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        img = post.run(None, {"image": x})[0] if with_poster else np.zeros((1, dim), np.float32)
        has = np.full((1, 1), float(with_poster), np.float32)
        return head.run(None, {"text": t, "image": img, "has_poster": has})[0]

    out = {}
    for mode, with_poster in (("plot", False), ("plot+poster", True)):
        predict(with_poster)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            predict(with_poster)
            times.append(1000 * (time.perf_counter() - t0))
        out[mode] = statistics.median(times)
    return out


def predict_once(page, timeout=300_000):
    page.evaluate(
        "(() => { const a = document.getElementById('demo-app').dataset; delete a.result; delete a.whyMs; })()"
    )
    page.click("#predict")
    page.wait_for_selector("#demo-app[data-result]", timeout=timeout)
    page.wait_for_selector("#demo-app[data-why-ms]", timeout=timeout)
    a = lambda k: float(page.get_attribute("#demo-app", k))  # noqa: E731
    return a("data-genres-ms"), a("data-why-ms"), a("data-model-ms")


def set_poster(page, path):
    page.set_input_files("#poster", str(path))
    page.wait_for_selector("#poster-preview:not([hidden])", timeout=120_000)


def browser_run(browser, url: str, posters: list[Path], with_poster: bool, runs: int) -> dict:
    context = browser.new_context()
    page = context.new_page()
    sizes = []
    page.on("response", lambda r: sizes.append((r.url, int(r.headers.get("content-length", 0) or 0))))
    page.goto(url + "#demo")
    page.wait_for_selector("#demo-app[data-ready='1']", timeout=60_000)
    page.evaluate(LONGTASKS)
    page.fill("#plot", PLOT)
    if with_poster:
        set_poster(page, posters[0])
    page.click("#predict")
    page.wait_for_selector("#demo-app[data-result]", timeout=300_000)
    cold = page.evaluate("performance.now()") / 1000
    page.wait_for_selector("#demo-app[data-why-ms]", timeout=300_000)
    demo_bytes = sum(
        n
        for u, n in sizes
        if "/assets/" in u and any(k in u for k in ("/models/", "/vendor/ort", "/vendor/tok", "/js/"))
    )
    genres, why, model = [], [], []
    for i in range(runs):
        if with_poster:
            set_poster(page, posters[(i + 1) % len(posters)])
        g, w, m = predict_once(page)
        genres.append(g)
        why.append(w)
        model.append(m)
    longest = max(page.evaluate("window.__long"), default=0.0)
    page.close()
    # a return visit in the same profile: models and runtime from Cache Storage
    page = context.new_page()
    page.goto(url + "#demo")
    page.wait_for_selector("#demo-app[data-ready='1']", timeout=60_000)
    page.fill("#plot", PLOT)
    if with_poster:
        set_poster(page, posters[0])
    page.click("#predict")
    page.wait_for_selector("#demo-app[data-result]", timeout=300_000)
    back = page.evaluate("performance.now()") / 1000
    isolated = page.evaluate("self.crossOriginIsolated")
    context.close()
    med = statistics.median
    return {
        "bytes": demo_bytes,
        "cold_s": cold,
        "return_s": back,
        "warm_ms": med(genres),
        "why_ms": med(why),
        "model_ms": med(model),
        "longest_ms": longest,
        "isolated": isolated,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--isolated", action="store_true", help="also serve cross-origin isolated (threads)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="mm-genre-bench-"))
    posters = []
    for i in range(4):
        poster(
            tmp / f"poster{i}.jpg",
            random.Random(i),
            ["Horror", "Romance", "Action", "Comedy"][i : i + 1],
            size=(500, 750),
        )
        posters.append(tmp / f"poster{i}.jpg")
    site.build(tmp / "_site")
    models = ROOT / "assets/models"
    spec = json.loads((models / "manifest.json").read_text())
    others = [k for k in spec if k.endswith("_text_encoder")]  # teacher_text_encoder, student_text_encoder, ...
    encoders = [("text_encoder", "")] + [(k, "?text=" + k.removesuffix("_text_encoder")) for k in others]
    print(f"plot: {len(PLOT.split())} words, 4 sentences; posters 500×750 JPEG; {args.runs} warm runs; medians")
    with sync_playwright() as p:
        browser = site.launch(p)
        for isolated in (False, True) if args.isolated else (False,):
            srv = site.Server(tmp / "_site", tmp / ("www-iso" if isolated else "www"), isolated=isolated)
            for part, query in encoders:
                nat = native_ms(models, part, posters[0], args.runs)
                name = spec[part]["file"]
                for mode in ("plot", "plot+poster"):
                    r = browser_run(browser, srv.url + query, posters, mode == "plot+poster", args.runs)
                    threads = (
                        "cross-origin isolated, threaded wasm"
                        if r["isolated"]
                        else "not isolated (as GitHub Pages), 1 thread"
                    )
                    print(f"\n{part} ({name}), {mode}, Chromium {threads}:")
                    print(
                        f"  bytes downloaded      {r['bytes'] / 2**20:.1f} MB (models + runtime + demo scripts, first visit)"
                    )
                    print(f"  cold time to genres   {r['cold_s']:.2f} s (page load → genres, nothing cached)")
                    print(
                        f"  return visit          {r['return_s']:.2f} s (page load → genres, models from Cache Storage)"
                    )
                    print(f"  warm time to genres   {r['warm_ms']:.0f} ms (click → genres shown)")
                    print(
                        f"  time to explanation   {r['why_ms']:.0f} ms (click → sentences{' and heatmap' if mode != 'plot' else ''} done)"
                    )
                    print(f"  longest main-thread   {r['longest_ms']:.0f} ms")
                    print(
                        f"  model time            browser {r['model_ms']:.1f} ms, native 1 thread {nat[mode]:.1f} ms: "
                        f"browser/native {r['model_ms'] / nat[mode]:.1f}×"
                    )
            srv.stop()
        browser.close()


if __name__ == "__main__":
    main()
