"""`python -m pipeline predict` at catalogue scale, and the runtime's start-up, on this machine. Figures
printed, nothing asserted.

  .venv/bin/python -m bench.predict [--data /work/shared/data/tmdb5000] [--rows 10000] [--baseline_rows 1000]
                                    [--startup_runs 5]

First the start-up: `predict` of one IMDb-length plot (`--workers 1`, and the defaults) and `serve` from
its start to /healthz answering, each run `--startup_runs` times as its own process: wall time (median,
lowest), peak resident memory (the process and its children, as `/usr/bin/time -v` reports it) and CPU
time. Targets (issue 27): 0.8 s and 300 MB each. The 1-minute load average is printed with each figure:
a figure taken beside other work is not comparable.

Then the throughput. It synthesizes IMDb-length plots from the real TMDB overviews (each joins 5 to 15 random overviews,
about 1,500 to 5,000 characters, so nearly all fill the encoder's max_len tokens) into a temporary
CSV (never committed), then runs the CLI as a user would, each run its own process tree:

- one at a time, today's way: one process, one row per model call (`--workers 1 --batch 1`),
  on the first `--baseline_rows` rows (a rate does not need all of them);
- the defaults: a worker per core, batching wherever the manifest allows, on all `--rows`;
- both plot-only and with posters (the real posters, by absolute path: `--allow-outside`);
- the defaults on a tenth of the rows too, to show that peak memory does not grow with input length.

Prints rows/s, the speed-up over one at a time measured in the same run, the peak memory of the
whole process tree (proportional set size, shared pages counted once; sampled every second), the CPU
time per row (user + system, all processes: unlike rows/s, it does not depend on what else the
machine runs), and how far the defaults' output is from one at a time on the rows both ran (largest
probability difference, genre sets that differ). Target: ≥ 3× one at a time.
"""

import argparse
import csv
import json
import os
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tree_pss_mb(pid: int) -> float:
    """Proportional set size of a process and all its descendants: resident memory with pages shared
    between them (the workers are forked) counted once in all, not once per process."""
    parents = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            parents[int(status.parent.name)] = int(re.search(r"PPid:\s+(\d+)", status.read_text()).group(1))
        except (OSError, AttributeError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += int(re.search(r"Pss:\s+(\d+) kB", Path(f"/proc/{p}/smaps_rollup").read_text()).group(1))
        except (OSError, AttributeError):
            pass
        todo += [c for c, parent in parents.items() if parent == p]
    return total / 1024


def run(src: Path, out: Path, *flags: str) -> tuple[float, float, float]:
    """(wall seconds, peak PSS MB of the process tree, CPU seconds of the tree) of one predict run."""
    cmd = [sys.executable, "-m", "pipeline", "predict", str(src), "--out", str(out), *flags]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    peak = [0.0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss_mb(proc.pid))
            time.sleep(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"predict failed ({proc.returncode}): {err[-2000:]}")
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, peak[0], cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime


def load() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def cpu_flags() -> str:
    flags = set(re.findall(r"\b(avx2|avx512f|avx512_vnni|avx_vnni)\b", Path("/proc/cpuinfo").read_text()))
    return " ".join(sorted(flags)) or "none of avx2/avx512"


def waited(proc: subprocess.Popen, timeout: float | None = None) -> tuple[int, float, float]:
    """(exit status, peak resident MB of the process and the children it waited for, CPU seconds): os.wait4,
    what /usr/bin/time -v reads. Past `timeout` seconds the process is killed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, 0 if deadline is None else os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            deadline = None  # then wait for it
        else:
            time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def one_plot(src: Path, out: Path, models: Path, *flags: str) -> tuple[float, float, float]:
    """(wall seconds, peak MB, CPU seconds) of `predict` on a one-row CSV, from start to exit."""
    cmd = [sys.executable, "-m", "pipeline", "predict", str(src), "--out", str(out), "--models", str(models), *flags]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "TQDM_DISABLE": "1"}, stderr=subprocess.DEVNULL)
    status, peak, cpu = waited(proc)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"predict of one plot failed ({status})")
    return seconds, peak, cpu


def peak_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM)."""
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def poster_request(url: str) -> None:
    """POST /predict with a plot and a small PNG poster; raises unless the answer is 200."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)).save(buf, "PNG")
    body = json.dumps({"plot": "A heist goes wrong.", "poster": base64.b64encode(buf.getvalue()).decode()}).encode()
    req = urllib.request.Request(f"{url}/predict", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200


def serve_ready(models: Path) -> tuple[float, float, float, float, float]:
    """(wall seconds from start to /healthz answering 200, peak MB of the server then, CPU seconds in all,
    wall seconds from start to the first plot + poster answer, peak MB then): `serve` on a free port,
    stopped once it answered both. The poster encoder loads beside the first requests (serve.create_app)."""
    cmd = [sys.executable, "-m", "pipeline", "serve", "--port", "0", "--models", str(models)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    line = ""
    while "serving" not in line:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise SystemExit(f"serve exited with {proc.returncode} before it was ready")
    url = re.search(r"http://[\d.]+:\d+", line).group(0)
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=10) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.005)
    seconds, peak = time.perf_counter() - start, peak_mb(proc.pid)
    poster_request(url)
    poster_seconds, poster_peak = time.perf_counter() - start, peak_mb(proc.pid)
    # SIGTERM, not Ctrl-C's SIGINT: a shell's background job starts with SIGINT ignored, and so does Python
    proc.send_signal(signal.SIGTERM)
    proc.stderr.close()
    _, _, cpu = waited(proc, timeout=20)
    return seconds, peak, cpu, poster_seconds, poster_peak


def startup(plot: str, models: Path, runs: int, tmp: Path) -> dict:
    """The start-up figures, printed; {name: (median wall, peak MB)}."""
    src = tmp / "one.csv"
    write(src, [(plot, "")], posters=False)
    out = {}
    print(f"\nstart-up: {runs} runs each, one plot of {len(plot)} characters, plot only (targets: 0.8 s, 300 MB)")
    for name, run_once in (
        ("predict --workers 1", lambda: one_plot(src, tmp / "one-out.csv", models, "--workers", "1")),
        ("predict (defaults)", lambda: one_plot(src, tmp / "one-out.csv", models)),
        ("serve until /healthz", lambda: serve_ready(models)),
    ):
        before = load()
        got = [run_once() for _ in range(runs)]
        walls = sorted(g[0] for g in got)
        peak, cpu = max(g[1] for g in got), statistics.median(g[2] for g in got)
        out[name] = (statistics.median(walls), peak)
        print(
            f"  {name:<22} wall {statistics.median(walls):5.2f} s median ({walls[0]:.2f}-{walls[-1]:.2f})  "
            f"peak {peak:4.0f} MB  CPU {cpu:4.2f} s  load {before:.2f} -> {load():.2f}"
        )
        if len(got[0]) > 3:  # serve: then the first request with a poster (its encoder loaded meanwhile)
            walls = sorted(g[3] for g in got)
            print(
                f"  {'  first poster answer':<22} wall {statistics.median(walls):5.2f} s median from start "
                f"({walls[0]:.2f}-{walls[-1]:.2f})  peak {max(g[4] for g in got):4.0f} MB  (CPU above: the whole run)"
            )
    return out


def synthesize(data: Path, rows: int, seed: int = 0) -> list[tuple[str, str]]:
    """(plot, absolute poster path) pairs: each plot joins 5-15 random overviews."""
    with open(data / "movies.csv", newline="", encoding="utf-8") as f:
        movies = [(r["overview"], r["poster"]) for r in csv.DictReader(f) if r["overview"].strip()]
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        plot = " ".join(rng.choice(movies)[0] for _ in range(rng.randint(5, 15)))
        poster = rng.choice([p for _, p in rng.sample(movies, 20) if p] or [""])
        out.append((plot, str((data / poster).resolve()) if poster else ""))
    return out


def write(path: Path, rows: list[tuple[str, str]], posters: bool) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["tmdb_id", "overview", "poster"])
        for i, (plot, poster) in enumerate(rows):
            w.writerow([i, plot, poster if posters else ""])
    return path


def compare(one: Path, batched: Path, rows: int) -> tuple[float, int]:
    """(largest probability difference, genre sets that differ) over the first `rows` rows of two outputs."""
    with open(one, newline="", encoding="utf-8") as a, open(batched, newline="", encoding="utf-8") as b:
        ra, rb = csv.reader(a), csv.reader(b)
        header = next(ra)
        next(rb)
        labels = [i for i, c in enumerate(header) if c not in ("tmdb_id", "genres", "mode")]
        genres, worst, differ = header.index("genres"), 0.0, 0
        for _, x, y in zip(range(rows), ra, rb):
            worst = max([worst] + [abs(float(x[i]) - float(y[i])) for i in labels])
            differ += x[genres] != y[genres]
    return worst, differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="a folder with movies.csv and posters/")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--baseline_rows", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None, help="passed to predict (default: its own, the cores)")
    parser.add_argument("--batch", type=int, default=None, help="passed to predict (default: its own)")
    parser.add_argument("--models", type=Path, default=ROOT / "assets/models")
    parser.add_argument("--startup_runs", type=int, default=5, help="runs of each start-up figure (0: none)")
    args = parser.parse_args()
    rows = synthesize(args.data, args.rows)
    chars = sorted(len(p) for p, _ in rows)
    flags = ["--models", str(args.models), "--allow-outside"]
    new = [
        *(["--workers", str(args.workers)] if args.workers else []),
        *(["--batch", str(args.batch)] if args.batch else []),
    ]
    text = json.loads((args.models / "manifest.json").read_text())["text_encoder"]
    print(
        f"{len(rows)} synthesized plots, {chars[len(chars) // 2]} characters median "
        f"({chars[0]}-{chars[-1]}); {len(os.sched_getaffinity(0))} cores ({cpu_flags()}); models {args.models}\n"
        f"text encoder: {text.get('quantization', 'float')}; batchable: {bool(text.get('batchable'))}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = startup(rows[0][0], args.models, args.startup_runs, tmp) if args.startup_runs else {}
        print(f"\nthroughput (load {load():.2f} at the start)")
        results = {}
        for posters in (False, True):
            mode = "plot+poster" if posters else "plot"
            full = write(tmp / f"{mode}.csv", rows, posters)
            few = write(tmp / f"{mode}-few.csv", rows[: args.baseline_rows], posters)
            tenth = write(tmp / f"{mode}-tenth.csv", rows[: max(1, args.rows // 10)], posters)
            for name, src, n, extra in (
                ("one at a time", few, args.baseline_rows, ["--workers", "1", "--batch", "1"]),
                ("defaults", tenth, max(1, args.rows // 10), new),
                ("defaults", full, args.rows, new),
            ):
                seconds, peak, cpu = run(src, tmp / f"{name}-{n}.csv", *flags, *extra)
                results[mode, name, n] = (n / seconds, peak)
                print(
                    f"  {mode:<12} {name:<14} {n:>6} rows {seconds:7.1f} s {n / seconds:7.1f} rows/s "
                    f"CPU {1000 * cpu / n:6.1f} ms/row  peak {peak:6.0f} MB"
                )
            worst, differ = compare(
                tmp / f"one at a time-{args.baseline_rows}.csv", tmp / f"defaults-{args.rows}.csv", args.baseline_rows
            )
            results[mode, "equal"] = (worst, differ)
        print("\nsummary")
        for mode in ("plot", "plot+poster"):
            base = results[mode, "one at a time", args.baseline_rows][0]
            rate, peak = results[mode, "defaults", args.rows]
            _, peak_tenth = results[mode, "defaults", max(1, args.rows // 10)]
            print(
                f"  {mode:<12} one at a time {base:.1f} rows/s; defaults {rate:.1f} rows/s = {rate / base:.2f}x "
                f"(target >= 3x); peak memory {peak_tenth:.0f} MB for {args.rows // 10} rows, {peak:.0f} MB for {args.rows}"
            )
            worst, differ = results[mode, "equal"]
            print(
                f"  {'':<12} defaults vs one at a time on the first {args.baseline_rows} rows: "
                f"largest probability difference {worst:.6f}, {differ} genre sets differ"
            )
        for name, (seconds, peak) in started.items():
            print(f"  {name:<22} {seconds:.2f} s / 0.8 s, {peak:.0f} MB / 300 MB")
        print(f"  load average at the end {load():.2f}")


if __name__ == "__main__":
    main()
