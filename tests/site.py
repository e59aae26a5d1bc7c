"""Build the Jekyll site under a sub-path and serve it on 127.0.0.1, as GitHub project pages do."""

import functools
import http.server
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# GitHub project pages serve the site under /REPO/; CI passes its own (SITE_BASEURL) so the site the
# tests check is the one it deploys
BASEURL = os.environ.get("SITE_BASEURL") or "/mm-genre"


PAGES = ("index.html", "methods/index.html")  # the story page and "Methods and evidence"


def repository_config() -> list[str]:
    """The repository the page may print a clone URL for: only one the build knows, GitHub Actions'
    GITHUB_REPOSITORY (owner/name of the repository being built); without it, none (no guessed URL)."""
    import tempfile

    repo = os.environ.get("GITHUB_REPOSITORY", "")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        return []
    extra = Path(tempfile.mkdtemp()) / "repository.yml"
    extra.write_text(f'repository: "{repo}"\n')
    return ["--config", f"{ROOT / '_config.yml'},{extra}"]


def build(dest: Path, baseurl: str = BASEURL) -> subprocess.CompletedProcess:
    # always (< 1 s): the vendored runtime and the service worker's shell list follow the sources
    subprocess.run(["npm", "run", "-s", "vendor"], cwd=ROOT, check=True)
    env = {**os.environ, "JEKYLL_NO_BUNDLER_REQUIRE": "true"}
    cmd = ["jekyll", "build", "--source", str(ROOT), "--destination", str(dest), "--baseurl", baseurl]
    return subprocess.run(cmd + repository_config(), cwd=ROOT, env=env, capture_output=True, text=True, check=True)


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".onnx": "application/octet-stream",
    }

    isolated = False

    def end_headers(self):
        if self.isolated:  # what a host that can isolate sends; lets onnxruntime-web use threads
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, *args):  # keep test output quiet
        pass


class Server:
    """Serves `site` at http://127.0.0.1:PORT/mm-genre/ until stopped."""

    def __init__(self, site: Path, root: Path, isolated: bool = False):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        (root / BASEURL.strip("/")).symlink_to(site, target_is_directory=True)
        handler = functools.partial(type("H", (Handler,), {"isolated": isolated}), directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{BASEURL}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch(playwright):
    return playwright.chromium.launch(
        executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=CHROMIUM_ARGS
    )


def build_source(dest: Path, data: dict[str, object], baseurl: str = BASEURL) -> str:
    """Build only the pages (index.md, methods.md, _includes, _layouts, _config.yml) from the given _data
    files ({file name: parsed content}); returns index.html's text (build_pages: every page's). No assets:
    a couple of seconds."""
    return build_pages(dest, data, baseurl)["index.html"]


def build_pages(dest: Path, data: dict[str, object], baseurl: str = BASEURL) -> dict[str, str]:
    """build_source's build; {page: its HTML} for each of PAGES."""
    import json

    import yaml

    src = dest / "src"
    (src / "_data").mkdir(parents=True)
    for name in ("_config.yml", "index.md", "methods.md", "_includes", "_layouts"):
        (src / name).symlink_to(ROOT / name)
    for name, content in data.items():
        text = json.dumps(content) if name.endswith(".json") else yaml.safe_dump(content, allow_unicode=True)
        (src / "_data" / name).write_text(text)
    env = {**os.environ, "JEKYLL_NO_BUNDLER_REQUIRE": "true"}
    cmd = [
        "jekyll",
        "build",
        "--quiet",
        "--source",
        str(src),
        "--destination",
        str(dest / "_site"),
        "--baseurl",
        baseurl,
    ]
    subprocess.run(cmd, cwd=src, env=env, check=True, capture_output=True, text=True)
    return {page: (dest / "_site" / page).read_text() for page in PAGES}


def site_data() -> dict[str, object]:
    """The committed _data/ files, parsed."""
    import json

    import yaml

    out = {}
    for path in sorted((ROOT / "_data").iterdir()):
        text = path.read_text()
        out[path.name] = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return out
