"""The local API under a flood of mixed good and bad requests, on 127.0.0.1. Figures printed.

  .venv/bin/python -m bench.serve [--seconds 120] [--clients 32] [--max_inflight N]

Starts `python -m pipeline serve` in its own process, warms it up with one request of each kind,
then floods it from many client threads for `--seconds`. Prints requests by kind and status,
requests/s, and the server's resident memory (RSS) before, at its highest and after the flood.
What should hold (tests/test_serve.py checks a shorter flood): no status outside 200/400/413/503,
every 503 carries Retry-After, and the memory after is about the memory before.
"""

import argparse
import base64
import io
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PLOT = "A detective hunts a serial killer through the rain-soaked streets of a corrupt city."


def png(seed: int, size=(48, 72)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height pixels, with almost no data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    body = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def big_jpeg(width: int = 3000, height: int = 4500) -> bytes:
    """A large but allowed poster (13.5 megapixels) that compresses small: a smooth gradient."""
    ramp = np.add.outer(np.linspace(0, 120, height), np.linspace(0, 120, width)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(ramp).convert("RGB").save(buf, "JPEG", quality=70)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kinds(max_body_mb: float) -> dict:
    """name → requests.post keyword arguments. Good and bad requests, as a flood would mix them."""
    poster, big, bomb = png(1), big_jpeg(), bomb_png(20000, 20000)
    return {
        "plot": {"json": {"plot": PLOT}},
        "plot+poster": {"json": {"plot": PLOT, "poster": b64(poster)}},
        "form+poster": {"data": {"plot": PLOT}, "files": {"poster": ("p.png", poster, "image/png")}},
        "big-poster": {"data": {"plot": PLOT}, "files": {"poster": ("big.jpg", big, "image/jpeg")}},
        "long-plot": {"json": {"plot": "word " * 200_000}},
        "bad-json": {"data": '{"plot": "a heist', "headers": {"Content-Type": "application/json"}},
        "empty-plot": {"json": {"plot": "  "}},
        "bad-base64": {"json": {"plot": PLOT, "poster": "not base64!!"}},
        "not-an-image": {"json": {"plot": PLOT, "poster": b64(b"hello, no pixels here")}},
        "pixel-bomb": {"data": {"plot": PLOT}, "files": {"poster": ("bomb.png", bomb, "image/png")}},
        "over-size": {
            "data": {"plot": PLOT},
            "files": {"poster": ("x.bin", os.urandom(int((max_body_mb + 1) * 2**20)))},
        },
    }


def rss_mb(pid: int) -> float:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024


class Server:
    """`python -m pipeline serve` on a free port of 127.0.0.1, in its own process."""

    def __init__(self, *flags: str, models: Path = ROOT / "assets/models"):
        cmd = [sys.executable, "-m", "pipeline", "serve", "--port", "0", "--models", str(models), *flags]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        line, said = "", []
        while "serving" not in line:
            line = self.proc.stderr.readline()
            said.append(line)
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}: {''.join(said).strip()}")
        self.url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def send(url: str, name: str, kwargs: dict) -> tuple[str, int, bool, str]:
    """(kind, status, answer is JSON, Retry-After header); status 0 for a connection error."""
    try:
        r = requests.post(f"{url}/predict", timeout=120, **kwargs)
    except requests.RequestException as e:
        return name, 0, False, type(e).__name__
    try:
        r.json()
        is_json = True
    except ValueError:
        is_json = False
    return name, r.status_code, is_json, r.headers.get("Retry-After", "")


def flood(server: Server, requests_total: int | None, seconds: float | None, clients: int, max_body_mb: float):
    """Mixed requests from `clients` threads until `requests_total` are answered or `seconds` pass.
    Returns Counter[(kind, status)], Counter[problem], RSS samples (MB), seconds taken."""
    pool, rng = kinds(max_body_mb), random.Random(0)
    names = list(pool)
    counts, problems, samples = Counter(), Counter(), [server.rss_mb()]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.2):
            samples.append(server.rss_mb())

    def client(seed: int):
        r = random.Random(seed)
        while not stop.is_set():
            with lock:
                if requests_total is not None and sent[0] >= requests_total:
                    return
                sent[0] += 1
            name = r.choice(names)
            kind, status, is_json, retry = send(server.url, name, pool[name])
            with lock:
                counts[kind, status] += 1
                if status not in (200, 400, 413, 503):
                    problems[f"{kind}: status {status} {retry}"] += 1
                elif not is_json:
                    problems[f"{kind}: {status} not JSON"] += 1
                elif status == 503 and not retry:
                    problems[f"{kind}: 503 without Retry-After"] += 1

    lock, sent = threading.Lock(), [0]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        futures = [ex.submit(client, rng.randrange(2**31)) for _ in range(clients)]
        if seconds is not None:
            stop.wait(seconds)
            stop.set()
        for f in futures:
            f.result()
    elapsed = time.perf_counter() - start
    stop.set()
    sampler.join()
    return counts, problems, samples, elapsed


def warm_up(server: Server, seconds: float, clients: int, max_body_mb: float) -> None:
    """A short flood first: allocators (onnxruntime's arena, malloc's) reach their working size."""
    for name, kwargs in kinds(max_body_mb).items():
        send(server.url, name, kwargs)
    flood(server, None, seconds, clients, max_body_mb)


def report(counts: Counter, problems: Counter, before: float, samples: list[float], after: float, elapsed: float):
    total = sum(counts.values())
    print(f"{total} requests in {elapsed:.0f} s: {total / elapsed:.1f} req/s")
    by_kind: dict[str, Counter] = {}
    for (kind, status), n in counts.items():
        by_kind.setdefault(kind, Counter())[status] += n
    for kind, statuses in sorted(by_kind.items()):
        print(f"  {kind:<13} " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    statuses = Counter()
    for (_, status), n in counts.items():
        statuses[status] += n
    print("  by status     " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    print(f"  problems      {dict(problems) or 'none'}")
    print(
        f"server RSS: before {before:.0f} MB, highest {max(samples):.0f} MB, after {after:.0f} MB ({after - before:+.0f} MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--warm_up", type=float, default=15, help="seconds of flood before the 'before' figure")
    parser.add_argument("--max_inflight", type=int, default=None, help="passed to serve (default: its own, the cores)")
    parser.add_argument(
        "--max_body_mb", type=float, default=2, help="passed to serve; over-size requests send 1 MB more"
    )
    args = parser.parse_args()
    flags = ["--max_body_mb", str(args.max_body_mb)]
    if args.max_inflight:
        flags += ["--max_inflight", str(args.max_inflight)]
    server = Server(*flags)
    try:
        warm_up(server, args.warm_up, args.clients, args.max_body_mb)
        time.sleep(1)
        before = server.rss_mb()
        print(f"flooding {server.url} for {args.seconds:.0f} s from {args.clients} clients ({' '.join(flags)})")
        counts, problems, samples, elapsed = flood(server, None, args.seconds, args.clients, args.max_body_mb)
        time.sleep(1)
        after = server.rss_mb()
        r = requests.get(f"{server.url}/healthz", timeout=10)
        print(f"after the flood /healthz answers {r.status_code}")
    finally:
        server.stop()
    report(counts, problems, before, samples, after, elapsed)


if __name__ == "__main__":
    main()
