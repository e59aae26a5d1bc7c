"""Demo speed in headless Chromium against native onnxruntime, on this machine. Figures printed.

  .venv/bin/python -m bench.browser [--runs 20]      (make bench)

Targets (not asserted): model download ≤ 35 MB; cold start (page load → first prediction)
≤ 3 s from localhost; warm plot-only median ≤ 30 ms; plot + poster ≤ 80 ms; browser/native ≤ 3×.
Runs single-threaded wasm (as on GitHub Pages), then cross-origin isolated with threads.
"""

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from pipeline import image
from pipeline.predict import GenrePredictor
from tests import site
from tests.tiny_data import poster

ROOT = Path(__file__).resolve().parent.parent
PLOT = (
    "A retired detective returns to the fishing village where she grew up after her brother is found drowned. "
    "The police call it an accident, but the harbour keeps its own secrets."
)


def native(poster_path: Path, runs: int) -> tuple[float, float]:
    predictor = GenrePredictor(ROOT / "assets/models", threads=1)
    pixels = image.load_image(poster_path)

    def median_ms(fn):
        fn()
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t))
        return statistics.median(times)

    return median_ms(lambda: predictor.probabilities(PLOT)), median_ms(lambda: predictor.probabilities(PLOT, pixels))


def browser(url: str, poster_path: Path, runs: int) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = site.launch(p)
        page = b.new_page()
        model_bytes = []
        page.on(
            "response",
            lambda r: "/assets/models/" in r.url and model_bytes.append(int(r.headers.get("content-length", 0))),
        )
        page.goto(url + "#demo")
        page.wait_for_selector("#demo-app[data-ready='1']")
        page.fill("#plot", PLOT)
        page.click("#predict")
        page.wait_for_selector("#top3 li", timeout=120_000)
        cold = page.evaluate("performance.now()") / 1000
        threads = page.evaluate("self.crossOriginIsolated")

        def warm():
            times = []
            for _ in range(runs):
                page.click("#predict")
                page.wait_for_function("!document.getElementById('predict').disabled")
                times.append(float(page.get_attribute("#demo-app", "data-last-ms")))
            return statistics.median(times)

        plot_only = warm()
        page.set_input_files("#poster", str(poster_path))
        page.wait_for_selector("#poster-preview:not([hidden])")
        with_poster = warm()
        b.close()
    return {
        "download_mb": sum(model_bytes) / 2**20,
        "cold_s": cold,
        "plot_ms": plot_only,
        "poster_ms": with_poster,
        "isolated": threads,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mm-genre-bench-"))
    poster(tmp / "poster.jpg", random.Random(0), ["Horror"], size=(185, 278))
    site.build(tmp / "_site")
    nat_plot, nat_poster = native(tmp / "poster.jpg", args.runs)
    print(
        f"native onnxruntime, 1 thread: plot only {nat_plot:.1f} ms, plot + poster {nat_poster:.1f} ms (median of {args.runs})"
    )
    for isolated in (False, True):
        srv = site.Server(tmp / "_site", tmp / ("www-iso" if isolated else "www"), isolated=isolated)
        r = browser(srv.url, tmp / "poster.jpg", args.runs)
        srv.stop()
        mode = "cross-origin isolated, threaded wasm" if r["isolated"] else "not isolated (as GitHub Pages), 1 thread"
        print(f"\nChromium, {mode}:")
        print(f"  model download       {r['download_mb']:.1f} MB (target ≤ 35)")
        print(f"  cold start           {r['cold_s']:.2f} s page load → first prediction (target ≤ 3)")
        print(
            f"  warm plot only       {r['plot_ms']:.1f} ms median (target ≤ 30); browser/native {r['plot_ms'] / nat_plot:.1f}× (aim ≤ 3)"
        )
        print(
            f"  warm plot + poster   {r['poster_ms']:.1f} ms median (target ≤ 80); browser/native {r['poster_ms'] / nat_poster:.1f}×"
        )


if __name__ == "__main__":
    main()
