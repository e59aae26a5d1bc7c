"""Lighthouse on the built site: both pages (the story and "Methods and evidence"), mobile and desktop.
Figures printed, never asserted.

  .venv/bin/python -m bench.lighthouse [--runs 1] [--cli PATH] [--site BUILT_SITE]

Builds the site as the tests do (tests/site.py: under the /mm-genre/ sub-path, vendored runtime included),
serves it on 127.0.0.1 as GitHub Pages would (no cross-origin isolation), and runs the Lighthouse CLI on each
page in each form factor: its default mobile emulation (a mid-range phone, simulated slow 4G and a 4x slower
CPU) and --preset=desktop. Prints the four category scores (performance, accessibility, best practices, SEO),
the performance metrics behind the first (FCP, LCP, TBT, CLS, Speed Index), and every audit of a category that
did not pass (score < 1), so a lost point names its cause. With --runs N, each score is the median of N runs
(Lighthouse's performance score moves from run to run; the other three do not).

The CLI: --cli, else $LIGHTHOUSE, else node_modules/.bin/lighthouse, else `lighthouse` on PATH; Chromium from
$CHROME_PATH or /usr/bin/chromium. Lighthouse is not one of the project's npm dependencies; to measure, install
it with npm (e.g. `npm install --no-save lighthouse`, or into another prefix and pass --cli). Without it this
prints that it is not installed and exits 2. The 1-minute load average is printed beside the figures: a
loaded machine lowers the performance score.
"""

import argparse
import functools
import gzip
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tests import site

ROOT = site.ROOT
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
METRICS = (  # Lighthouse audit id, short name, unit
    ("first-contentful-paint", "FCP", "ms"),
    ("largest-contentful-paint", "LCP", "ms"),
    ("total-blocking-time", "TBT", "ms"),
    ("cumulative-layout-shift", "CLS", ""),
    ("speed-index", "SI", "ms"),
)
FORMS = {"mobile": [], "desktop": ["--preset=desktop"]}


class GzipHandler(site.Handler):
    """tests/site.py's handler, with text files gzip-compressed for a client that accepts it, as GitHub Pages
    serves them."""

    COMPRESSED = {".html", ".css", ".js", ".mjs", ".json", ".svg", ".wasm", ".txt"}

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir() and self.path.split("?")[0].endswith("/"):
            path = path / "index.html"
        accepts = "gzip" in self.headers.get("Accept-Encoding", "")
        if path.suffix not in self.COMPRESSED or not path.is_file() or not accepts:
            return super().do_GET()
        body = gzip.compress(path.read_bytes(), 6)
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", self.date_time_string(int(path.stat().st_mtime)))
        self.end_headers()
        self.wfile.write(body)


class Server:
    """The built site at http://127.0.0.1:PORT/mm-genre/ (tests/site.py's layout), gzip or not."""

    def __init__(self, built: Path, root: Path, compress: bool):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        (root / site.BASEURL.strip("/")).symlink_to(built, target_is_directory=True)
        handler = functools.partial(GzipHandler if compress else site.Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{site.BASEURL}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def find_cli(given: str | None) -> str | None:
    for candidate in (given, os.environ.get("LIGHTHOUSE"), str(ROOT / "node_modules/.bin/lighthouse")):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("lighthouse")


def run_once(cli: str, url: str, form: str) -> dict:
    env = {
        **os.environ,
        "CHROME_PATH": os.environ.get("CHROME_PATH") or shutil.which("chromium") or "/usr/bin/chromium",
    }
    with tempfile.TemporaryDirectory() as profile:
        flags = f"--headless=new --no-sandbox --disable-gpu --user-data-dir={profile}"
        cmd = [cli, url, "--quiet", "--output=json", "--output-path=stdout", f"--chrome-flags={flags}",
               f"--only-categories={','.join(CATEGORIES)}", *FORMS[form]]  # fmt: skip
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if run.returncode:
        raise RuntimeError(f"lighthouse failed on {url} ({form}): {run.stderr.strip().splitlines()[-3:]}")
    return json.loads(run.stdout)


def failing(report: dict) -> list[str]:
    """Audits of the four categories that did not pass (a weighted audit scored under 1), with their title."""
    out = []
    for cat in CATEGORIES:
        for ref in report["categories"][cat]["auditRefs"]:
            audit = report["audits"][ref["id"]]
            if ref.get("weight", 0) > 0 and audit.get("score") is not None and audit["score"] < 1:
                out.append(f"{cat}: {ref['id']} ({audit['score']:.2f}) {audit['title']}")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="runs per page and form factor (median of the scores)")
    parser.add_argument("--cli", help="the lighthouse CLI (default: $LIGHTHOUSE, node_modules/.bin, PATH)")
    parser.add_argument(
        "--no-gzip", action="store_true", help="serve every file uncompressed (GitHub Pages gzips text)"
    )
    parser.add_argument(
        "--site", type=Path, help="a site already built for the /mm-genre/ base URL (default: build one)"
    )
    args = parser.parse_args()
    cli = find_cli(args.cli)
    if not cli:
        print(
            "Lighthouse: not installed (no --cli, $LIGHTHOUSE, node_modules/.bin/lighthouse or lighthouse on PATH): not measured"
        )
        sys.exit(2)
    version = subprocess.run([cli, "--version"], capture_output=True, text=True).stdout.strip()
    chromium = subprocess.run(
        [os.environ.get("CHROME_PATH") or "chromium", "--version"], capture_output=True, text=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        built = args.site.resolve() if args.site else Path(tmp) / "_site"
        if not args.site:
            site.build(built)
        server = Server(built, Path(tmp) / "www", compress=not args.no_gzip)
        try:
            print(f"Lighthouse {version}, {chromium.stdout.strip()}, {args.runs} run(s) each, site at {server.url}")
            print(f"text files {'uncompressed' if args.no_gzip else 'gzip-compressed, as GitHub Pages serves them'}")
            print(f"1-minute load average before: {os.getloadavg()[0]:.1f}")
            header = f"{'page':<10} {'form':<8} " + " ".join(f"{c:>14}" for c in CATEGORIES)
            header += "   " + "  ".join(name for _, name, _ in METRICS)
            print(header)
            problems = {}
            for page in site.PAGES:
                path = page.removesuffix("index.html")
                for form in FORMS:
                    reports = [run_once(cli, server.url + path, form) for _ in range(args.runs)]
                    scores = [
                        round(100 * statistics.median(r["categories"][c]["score"] or 0 for r in reports))
                        for c in CATEGORIES
                    ]
                    metrics = []
                    for audit, name, unit in METRICS:
                        value = statistics.median(r["audits"][audit]["numericValue"] for r in reports)
                        metrics.append(f"{name} {value:.3f}" if not unit else f"{name} {value:,.0f} {unit}")
                    print(
                        f"{path or './':<10} {form:<8} "
                        + " ".join(f"{s:>14}" for s in scores)
                        + "   "
                        + ", ".join(metrics)
                    )
                    problems[(path or "./", form)] = sorted({p for r in reports for p in failing(r)})
            print(f"1-minute load average after: {os.getloadavg()[0]:.1f}")
            for (path, form), found in problems.items():
                if found:
                    print(f"\nnot passed on {path} ({form}):")
                    for p in found:
                        print(f"  {p}")
            if not any(problems.values()):
                print("\nevery weighted audit passed on both pages, mobile and desktop")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
