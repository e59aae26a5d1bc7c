"""Demo speed in headless Chromium beside native onnxruntime, on this machine. Figures printed, never asserted.

  .venv/bin/python -m bench.browser [--runs 10] [--isolated] [--no-options] [--no-throttle]      (make bench)

Every figure comes from one run, side by side. For each text encoder the manifest lists ("text_encoder";
also any "NAME_text_encoder", selected in the demo by ?text=NAME) and each input mode:
  bytes        on the wire for a first visit up to the first genres (models + runtime + the demo's scripts)
  cold         page load → genres, a fresh browser profile (nothing stored), phase by phase
  return       page load → genres, a second visit in the same profile (models, runtime and its compiled
               code from this browser), phase by phase
  warm         Predict click → genres shown, median of --runs (a new poster each run with posters)
  explanation  Predict click → sentence explanation (and poster heatmap) done, median
  model        the worker's own inference time (text [+ poster] + head), median, against native
               onnxruntime in Python, one thread, on the same inputs, measured in the same run
Phases (each a start time after navigation and a duration, as the worker records them): worker start
(the page's request → the worker's modules ran), manifest (manifest + runtime list + stored files),
runtime compile (the streamed wasm compile), session NAME (onnxruntime session creation, without the
compile), tokenizer, warm-up run (a return visit runs the plot's models once on a few words as soon as
they are ready, before any click), first run (the first prediction). Then: session options compared on return visits (graph optimization
level; freeDimensionOverrides batch=1 was dropped: with it the
explanation never finished), and the shipped encoder with Chromium's CPU throttled 4x (DevTools
Emulation.setCPUThrottlingRate, a phone-class CPU), on the page and its worker.
Profiles are real ones on disk (a private context keeps no compiled code). Single-threaded wasm, as on
GitHub Pages (no cross-origin isolation); --isolated adds a cross-origin isolated run (threads).
"""

import argparse
import functools
import http.server
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from pipeline import image, rules
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
PHASES = [
    "worker start",
    "manifest",
    "runtime compile",
    "session head",
    "session text",
    "session poster",
    "tokenizer",
    "warm-up run",
    "first run",
]
OPTIONS = {  # session options compared (window.__mmGenreOrt → the worker's InferenceSession.create)
    "graphOptimizationLevel all": {"graphOptimizationLevel": "all"},
    "default (graphOptimizationLevel basic)": {},
    "graphOptimizationLevel disabled": {"graphOptimizationLevel": "disabled"},
}


class Handler(site.Handler):
    """tests/site.py's handler, counting the bytes of every answer."""

    def send_header(self, keyword, value):
        if keyword.lower() == "content-length":
            self.server.sent.append((self.path, int(value)))
        super().send_header(keyword, value)


class Server:
    def __init__(self, folder: Path, root: Path, isolated: bool = False):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        (root / site.BASEURL.strip("/")).symlink_to(folder, target_is_directory=True)
        handler = functools.partial(type("H", (Handler,), {"isolated": isolated}), directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.sent = []
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{site.BASEURL}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def build(tmp: Path) -> Path:
    """The site with the committed models; the manifest's rules block written when it predates it."""
    subprocess.run(["npm", "run", "-s", "vendor"], cwd=ROOT, check=True, capture_output=True)
    site.build(tmp / "_site")
    models = tmp / "_site/assets/models"
    spec = json.loads((models / "manifest.json").read_text())
    if "rules" not in spec:
        spec["rules"] = {
            **rules.RULES,
            "truncation": rules.truncation(spec["text_encoder"]["max_len"]),
            "poster": spec["poster_encoder"]["preprocessing"],
        }
        (models / "manifest.json").unlink()  # the build may have linked it
        (models / "manifest.json").write_text(json.dumps(spec, indent=1))
    return models


def preoptimized(tmp: Path, folder: Path) -> tuple[Path, dict]:
    """A copy of the site whose text encoder and head are graphs onnxruntime already optimized (level
    extended, saved by native onnxruntime), the manifest updated: for a browser session at level disabled."""
    from pipeline import cache

    out = tmp / "_site_preoptimized"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(folder, out, copy_function=os.link)
    models = out / "assets/models"
    spec = json.loads((models / "manifest.json").read_text())
    sizes = {}
    for part in ("text_encoder", "fusion_head"):
        path = models / spec[part]["file"]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(tmp / "optimized.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        sizes[path.name] = (path.stat().st_size, (tmp / "optimized.onnx").stat().st_size)
        path.unlink()
        shutil.move(tmp / "optimized.onnx", path)
        spec["files"][path.name] = {"bytes": path.stat().st_size, "sha256": cache.file_digest(path)}
    (models / "manifest.json").unlink()
    (models / "manifest.json").write_text(json.dumps(spec, indent=1))
    return out, sizes


def native_ms(models: Path, part: str, poster_path: Path, runs: int) -> dict:
    """Median ms of onnxruntime, one thread: plot only (tokenize + text + head), plot + poster (+ poster)."""
    spec = json.loads((models / "manifest.json").read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3

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
    window = rules.truncation(enc["max_len"])
    x = np.ascontiguousarray(image.load_image(poster_path).transpose(2, 0, 1)[None], dtype=np.float32)
    dim = spec["poster_encoder"]["dim"]

    def predict(with_poster):
        ids = np.array([rules.truncate(tok.encode(PLOT[: window["max_chars"]]).ids, window)], dtype=np.int64)
        t = text.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        img = post.run(None, {"image": x})[0] if with_poster else np.zeros((1, dim), np.float32)
        has = np.full((1, 1), float(with_poster), np.float32)
        # as the worker asks: probabilities, and with a poster the Jacobian its heatmap needs
        wanted = [spec["fusion_head"]["output"]]
        if with_poster and "gradcam" in spec:
            wanted.append(spec["gradcam"]["jacobian"]["output"])
        return head.run(wanted, {"text": t, "image": img, "has_poster": has})[0]

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


def throttle(page, rate: float):
    """Emulation.setCPUThrottlingRate on the page and on its dedicated workers (attached as child targets)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setCPUThrottlingRate", {"rate": rate})
    workers = []

    def attached(event):
        sid = event["sessionId"]
        workers.append(sid)
        for i, (method, params) in enumerate(
            [("Emulation.setCPUThrottlingRate", {"rate": rate}), ("Runtime.runIfWaitingForDebugger", {})]
        ):
            msg = json.dumps({"id": 1000 + i, "method": method, "params": params})
            cdp.send("Target.sendMessageToTarget", {"sessionId": sid, "message": msg})

    def answered(event):  # the workers' replies: an error means that worker runs unthrottled
        reply = json.loads(event["message"])
        if reply.get("id") == 1000 and "error" in reply:
            workers.remove(event["sessionId"])

    cdp.on("Target.attachedToTarget", attached)
    cdp.on("Target.receivedMessageFromTarget", answered)
    cdp.send("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": False})
    return workers


def set_poster(page, path):
    page.set_input_files("#poster", str(path))
    page.wait_for_selector("#poster-preview:not([hidden])", timeout=120_000)


def attr(page, name):
    return page.get_attribute("#demo-app", name)


def visit(context, url, with_poster, posters, rate=None):
    """A page load → genres: total seconds after navigation and the worker's phases."""
    page = context.new_page()
    workers = throttle(page, rate) if rate else []
    page.goto(url + "#demo")
    page.wait_for_selector("#demo-app[data-ready='1']", timeout=120_000)
    page.evaluate(LONGTASKS)
    page.fill("#plot", PLOT)
    if with_poster:
        set_poster(page, posters[0])
    page.click("#predict")
    page.wait_for_selector("#demo-app[data-result]", timeout=600_000)
    total = page.evaluate("performance.now()") / 1000
    page.wait_for_selector("#demo-app[data-why-ms]", timeout=600_000)
    return page, {
        "total": total,
        "ready": float(attr(page, "data-ready-ms")) / 1000,
        "phases": json.loads(attr(page, "data-phases")),
        "throttled workers": len(workers),
    }


def warm(page, with_poster, posters, runs):
    genres, why, model = [], [], []
    for i in range(runs):
        if with_poster:
            set_poster(page, posters[(i + 1) % len(posters)])
        page.evaluate(
            "(() => { const a = document.getElementById('demo-app').dataset; delete a.result; delete a.whyMs; })()"
        )
        page.click("#predict")
        page.wait_for_selector("#demo-app[data-result]", timeout=600_000)
        page.wait_for_selector("#demo-app[data-why-ms]", timeout=600_000)
        genres.append(float(attr(page, "data-genres-ms")))
        why.append(float(attr(page, "data-why-ms")))
        model.append(float(attr(page, "data-model-ms")))
    med = statistics.median
    return {"warm_ms": med(genres), "why_ms": med(why), "model_ms": med(model)}


def profile(playwright, folder: Path, options: dict | None = None):
    shutil.rmtree(folder, ignore_errors=True)
    context = playwright.chromium.launch_persistent_context(
        str(folder), executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=site.CHROMIUM_ARGS
    )
    if options:
        context.add_init_script(f"window.__mmGenreOrt = {json.dumps(options)};")
    return context


def measure(playwright, srv, url, tmp, posters, with_poster, runs, options=None, rate=None):
    """Cold visit, warm runs on that page, then a return visit: one fresh profile."""
    context = profile(playwright, tmp / "profile", options)
    sent0 = len(srv.httpd.sent)
    page, cold = visit(context, url, with_poster, posters, rate)
    sent = srv.httpd.sent[sent0:]
    cold["bytes"] = sum(
        n for path, n in sent if any(k in path for k in ("/models/", "/vendor/ort", "/vendor/tok", "/js/"))
    )
    hot = warm(page, with_poster, posters, runs)
    cold["longest_ms"] = max(page.evaluate("window.__long"), default=0.0)
    cold["isolated"] = page.evaluate("self.crossOriginIsolated")
    page.close()
    time.sleep(1)  # let the compiled-code cache be written, as between two real visits
    page, back = visit(context, url, with_poster, posters, rate)
    page.close()
    context.close()
    return cold, back, hot


def timeline(label, v):
    parts = []
    for name in PHASES:
        p = v["phases"].get(name)
        if p:
            parts.append(f"{name} {p['ms'] / 1000:.2f}")
    ready = f"page ready {v['ready']:.2f}"
    print(f"  {label:<22}{v['total']:5.2f} s   ({ready}; " + ", ".join(parts) + ")")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--isolated", action="store_true", help="also serve cross-origin isolated (threads)")
    parser.add_argument("--no-options", action="store_true", help="skip the session options comparison")
    parser.add_argument("--no-throttle", action="store_true", help="skip the 4x CPU throttled run")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="mm-genre-bench-"))
    posters = []
    for i in range(4):
        genre = ["Horror", "Romance", "Action", "Comedy"][i : i + 1]
        poster(tmp / f"poster{i}.jpg", random.Random(i), genre, size=(500, 750))
        posters.append(tmp / f"poster{i}.jpg")
    models = build(tmp)
    spec = json.loads((models / "manifest.json").read_text())
    others = [k for k in spec if k.endswith("_text_encoder")]  # teacher_text_encoder, student_text_encoder, ...
    encoders = [("text_encoder", "")] + [(k, "?text=" + k.removesuffix("_text_encoder")) for k in others]
    print(f"plot: {len(PLOT.split())} words, 4 sentences; posters 500×750 JPEG; {args.runs} warm runs; medians")
    print("times: page load → genres, seconds after navigation; in brackets the worker's phases (s)")
    with sync_playwright() as p:
        for isolated in (False, True) if args.isolated else (False,):
            srv = Server(tmp / "_site", tmp / ("www-iso" if isolated else "www"), isolated=isolated)
            for part, query in encoders:
                for mode in ("plot", "plot+poster"):
                    nat = native_ms(models, part, posters[0], args.runs)[mode]  # beside the browser run
                    cold, back, hot = measure(p, srv, srv.url + query, tmp, posters, mode == "plot+poster", args.runs)
                    threads = (
                        "cross-origin isolated, threaded"
                        if cold["isolated"]
                        else "not isolated (as GitHub Pages), 1 thread"
                    )
                    print(f"\n{part} ({spec[part]['file']}), {mode}, Chromium {threads}:")
                    print(
                        f"  bytes downloaded      {cold['bytes'] / 2**20:.1f} MB (models + runtime + demo scripts, first visit)"
                    )
                    timeline("cold (nothing stored)", cold)
                    timeline("return visit", back)
                    print(f"  warm click → genres   {hot['warm_ms']:.0f} ms")
                    print(
                        f"  click → explanation   {hot['why_ms']:.0f} ms (sentences{' and heatmap' if mode != 'plot' else ''})"
                    )
                    print(f"  longest main-thread   {cold['longest_ms']:.0f} ms")
                    print(
                        f"  model time            browser {hot['model_ms']:.1f} ms, native 1 thread {nat:.1f} ms: "
                        f"browser/native {hot['model_ms'] / nat:.1f}×"
                    )
            if not isolated and not args.no_options:
                print("\nsession options, shipped encoder, plot only (return visit; warm click → genres; model ms):")
                for name, options in OPTIONS.items():
                    _, back, hot = measure(p, srv, srv.url, tmp, posters, False, max(3, args.runs // 2), options)
                    sess = sum(v["ms"] for k, v in back["phases"].items() if k.startswith("session")) / 1000
                    print(
                        f"  {name:<38} return {back['total']:.2f} s (sessions {sess:.2f} s, first run "
                        f"{back['phases']['first run']['ms']:.0f} ms); warm {hot['warm_ms']:.0f} ms; model {hot['model_ms']:.1f} ms"
                    )
            if not isolated and not args.no_options:
                folder, sizes = preoptimized(tmp, tmp / "_site")
                pre = Server(folder, tmp / "www-preoptimized")
                _, back, hot = measure(
                    p, pre, pre.url, tmp, posters, False, max(3, args.runs // 2), {"graphOptimizationLevel": "disabled"}
                )
                pre.stop()
                sess = sum(v["ms"] for k, v in back["phases"].items() if k.startswith("session")) / 1000
                grown = ", ".join(f"{n} {a / 2**20:.1f} → {b / 2**20:.1f} MB" for n, (a, b) in sizes.items())
                print(
                    f"  {'pre-optimized graphs (extended), disabled':<38} return {back['total']:.2f} s (sessions {sess:.2f} s, first run "
                    f"{back['phases']['first run']['ms']:.0f} ms); warm {hot['warm_ms']:.0f} ms; model {hot['model_ms']:.1f} ms ({grown})"
                )
            if not isolated and not args.no_throttle:
                print(
                    "\nCPU throttled 4x (Emulation.setCPUThrottlingRate on the page and its worker), shipped encoder:"
                )
                for mode in ("plot", "plot+poster"):
                    cold, back, hot = measure(p, srv, srv.url, tmp, posters, mode == "plot+poster", 3, rate=4)
                    print(f" {mode}: (workers throttled: {cold['throttled workers']})")
                    timeline("cold (nothing stored)", cold)
                    timeline("return visit", back)
                    print(f"  warm click → genres   {hot['warm_ms']:.0f} ms (model {hot['model_ms']:.1f} ms)")
            srv.stop()


if __name__ == "__main__":
    main()
