"""`python -m pipeline predict` at catalogue scale, and the runtime's start-up, on this machine. Figures
printed, nothing asserted.

  .venv/bin/python -m bench.predict [--data /work/shared/data/tmdb5000] [--rows 3000] [--baseline_rows 300]
                                    [--long_rows 500] [--startup_runs 5]

A plot is read whole (issue 28): one over the encoder's max_len tokens is read in windows
(the manifest's rules.windows, its stride apart), so a plot costs about its window count in encoder runs; `predict` writes
each plot's count in its `windows` column, and the figures below print them.

First the start-up: `predict` of one plot (`--workers 1`, and the defaults), a 50-word plot and a 700-word
plot, and `serve` from its start to /healthz answering, each run `--startup_runs` times as its own process:
wall time (median, lowest), peak resident memory (the process and its children, as `/usr/bin/time -v`
reports it) and CPU time. Targets (issue 27): 0.8 s and 300 MB each (set for a plot of one window). The
1-minute load average is printed with each figure: a figure taken beside other work is not comparable.

Then the throughput. It synthesizes IMDb-length plots from the real TMDB overviews (each joins 5 to 15
random overviews, about 1,500 to 5,000 characters: 2 to 6 windows) into a temporary CSV (never committed),
then runs the CLI as a user would, each run its own process tree:

- one at a time: one process, one input per model call (`--workers 1 --batch 1`), on the first
  `--baseline_rows` rows (a rate does not need all of them);
- the defaults: a worker per core, batching wherever the manifest allows, on all `--rows`;
- both plot-only and with posters (the real posters, by absolute path: `--allow-outside`);
- the defaults on a tenth of the rows too, to show that peak memory does not grow with input length;
- the defaults on `--long_rows` plots of exactly 700 words (overviews joined, then cut), plot only:
  the pasted Wikipedia plot or IMDb synopsis the demo expects.

Prints rows/s, windows per plot (from the output's `windows` column), the speed-up over one at a time
measured in the same run, the peak memory of the whole process tree (proportional set size, shared pages
counted once, and resident set size summed over the processes; sampled every second), both as the peak of
the run's first quarter against its last quarter (memory that stays flat over a long run: no growth with
rows read), the CPU time per row (user + system, all processes: unlike rows/s, it does not depend on what
else the machine runs), and how far the defaults' output is from one at a time on the rows both ran
(largest probability difference, genre sets that differ). Target: >= 3x one at a time.
"""

import argparse
import csv
import functools
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """(proportional set size, resident set size) of a process and all its descendants: PSS counts pages
    shared between them (the workers are forked) once in all; RSS counts them once per process."""
    parents = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            parents[int(status.parent.name)] = int(re.search(r"PPid:\s+(\d+)", status.read_text()).group(1))
        except (OSError, AttributeError):
            continue
    pss, rss, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            pss += int(re.search(r"Pss:\s+(\d+) kB", rollup).group(1))
            rss += int(re.search(r"Rss:\s+(\d+) kB", rollup).group(1))
        except (OSError, AttributeError):
            pass
        todo += [c for c, parent in parents.items() if parent == p]
    return pss / 1024, rss / 1024


@dataclass
class Run:
    seconds: float
    cpu: float  # CPU seconds of the process tree
    samples: list[tuple[float, float, float]]  # (seconds since the start, tree PSS MB, tree RSS MB), every second

    @property
    def peak(self) -> float:
        """Peak PSS of the tree, MB."""
        return max((pss for _, pss, _ in self.samples), default=0.0)

    def quarter_peaks(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((PSS, RSS) peaks of the run's first quarter, of its last quarter), MB; the first quarter starts once
        the models are loaded (the first sample whose PSS is past half the run's peak)."""
        loaded = [s for s in self.samples if s[1] >= self.peak / 2]
        if not loaded:
            return (0.0, 0.0), (0.0, 0.0)
        start, end = loaded[0][0], loaded[-1][0]
        span = max(end - start, 1e-9)
        first = [s for s in loaded if s[0] <= start + span / 4] or loaded[:1]
        last = [s for s in loaded if s[0] >= end - span / 4] or loaded[-1:]
        return tuple((max(s[1] for s in q), max(s[2] for s in q)) for q in (first, last))


def run(src: Path, out: Path, *flags: str) -> Run:
    """One predict run: wall seconds, CPU seconds and the memory of its process tree over time."""
    cmd = [sys.executable, "-m", "pipeline", "predict", str(src), "--out", str(out), *flags]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    samples = []

    def sample():
        while proc.poll() is None:
            samples.append((time.perf_counter() - start, *tree_memory_mb(proc.pid)))
            time.sleep(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"predict failed ({proc.returncode}): {err[-2000:]}")
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Run(seconds, cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, samples)


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


def startup(plots: dict[str, str], models: Path, runs: int, tmp: Path) -> dict:
    """The start-up figures, printed; {name: (median wall, peak MB)}."""
    out = {}
    print(f"\nstart-up: {runs} runs each, one plot, plot only (targets: 0.8 s, 300 MB)")
    for label, plot in plots.items():
        src = write(tmp / f"one-{len(plot)}.csv", [(plot, "")], posters=False)
        for name, flags in (
            (f"predict --workers 1, {label}", ["--workers", "1"]),
            (f"predict (defaults), {label}", []),
        ):
            out[name] = timed(name, functools.partial(one_plot, src, tmp / "one-out.csv", models, *flags), runs)
    out["serve until /healthz"] = timed("serve until /healthz", lambda: serve_ready(models), runs)
    return out


def timed(name: str, run_once, runs: int) -> tuple[float, float]:
    """Runs `run_once` `runs` times and prints its figures; (median wall, peak MB)."""
    before = load()
    got = [run_once() for _ in range(runs)]
    walls = sorted(g[0] for g in got)
    peak, cpu = max(g[1] for g in got), statistics.median(g[2] for g in got)
    print(
        f"  {name:<36} wall {statistics.median(walls):5.2f} s median ({walls[0]:.2f}-{walls[-1]:.2f})  "
        f"peak {peak:4.0f} MB  CPU {cpu:4.2f} s  load {before:.2f} -> {load():.2f}"
    )
    if len(got[0]) > 3:  # serve: then the first request with a poster (its encoder loaded meanwhile)
        walls = sorted(g[3] for g in got)
        print(
            f"  {'  first poster answer':<36} wall {statistics.median(walls):5.2f} s median from start "
            f"({walls[0]:.2f}-{walls[-1]:.2f})  peak {max(g[4] for g in got):4.0f} MB  (CPU above: the whole run)"
        )
    return statistics.median(g[0] for g in got), peak


def read_movies(data: Path) -> list[tuple[str, str]]:
    with open(data / "movies.csv", newline="", encoding="utf-8") as f:
        return [(r["overview"], r["poster"]) for r in csv.DictReader(f) if r["overview"].strip()]


def synthesize(data: Path, rows: int, seed: int = 0) -> list[tuple[str, str]]:
    """(plot, absolute poster path) pairs: each plot joins 5-15 random overviews."""
    movies = read_movies(data)
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        plot = " ".join(rng.choice(movies)[0] for _ in range(rng.randint(5, 15)))
        poster = rng.choice([p for _, p in rng.sample(movies, 20) if p] or [""])
        out.append((plot, str((data / poster).resolve()) if poster else ""))
    return out


def of_words(data: Path, rows: int, words: int, seed: int = 1) -> list[str]:
    """Plots of exactly `words` words: random overviews joined until there are enough, then cut."""
    movies = read_movies(data)
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        text: list[str] = []
        while len(text) < words:
            text += rng.choice(movies)[0].split()
        out.append(" ".join(text[:words]))
    return out


def write(path: Path, rows: list[tuple[str, str]], posters: bool) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["tmdb_id", "overview", "poster"])
        for i, (plot, poster) in enumerate(rows):
            w.writerow([i, plot, poster if posters else ""])
    return path


NOT_GENRES = ("tmdb_id", "genres", "mode", "windows")  # predict's output columns that are not probabilities


def compare(one: Path, batched: Path, rows: int) -> tuple[float, int]:
    """(largest probability difference, genre sets that differ) over the first `rows` rows of two outputs."""
    with open(one, newline="", encoding="utf-8") as a, open(batched, newline="", encoding="utf-8") as b:
        ra, rb = csv.reader(a), csv.reader(b)
        header = next(ra)
        next(rb)
        labels = [i for i, c in enumerate(header) if c not in NOT_GENRES]
        genres, worst, differ = header.index("genres"), 0.0, 0
        for _, x, y in zip(range(rows), ra, rb):
            worst = max([worst] + [abs(float(x[i]) - float(y[i])) for i in labels])
            differ += x[genres] != y[genres]
    return worst, differ


def windows_read(out: Path) -> list[int]:
    """Each predicted row's window count, from predict's `windows` column."""
    with open(out, newline="", encoding="utf-8") as f:
        return [int(r["windows"]) for r in csv.DictReader(f) if r["windows"]]


def describe(counts: list[int]) -> str:
    counts = sorted(counts)
    return (
        f"{statistics.mean(counts):.2f} windows/plot (median {counts[len(counts) // 2]}, "
        f"{counts[0]}-{counts[-1]}; {sum(counts)} windows)"
    )


def report(mode: str, name: str, n: int, got: Run, out: Path) -> None:
    counts = windows_read(out)
    print(
        f"  {mode:<12} {name:<14} {n:>6} rows {got.seconds:7.1f} s {n / got.seconds:7.1f} rows/s "
        f"{sum(counts) / got.seconds:6.1f} windows/s  CPU {1000 * got.cpu / n:6.1f} ms/row  peak {got.peak:6.0f} MB PSS"
    )
    print(f"  {'':<12} {'':<14} {describe(counts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="a folder with movies.csv and posters/")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--baseline_rows", type=int, default=300)
    parser.add_argument("--long_rows", type=int, default=500, help="700-word plots (0: none)")
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
    spec = json.loads((args.models / "manifest.json").read_text())
    text = spec["text_encoder"]
    print(
        f"{len(rows)} synthesized plots, {chars[len(chars) // 2]} characters median "
        f"({chars[0]}-{chars[-1]}); {len(os.sched_getaffinity(0))} cores ({cpu_flags()}); models {args.models}\n"
        f"text encoder: {text.get('quantization', 'float')}; batchable: {bool(text.get('batchable'))}; "
        f"windows: {spec['rules']['windows']}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        short = " ".join(of_words(args.data, 1, 50, seed=2)[0].split())
        long = of_words(args.data, 1, 700, seed=3)[0]
        plots = {"50 words": short, "700 words": long}
        started = startup(plots, args.models, args.startup_runs, tmp) if args.startup_runs else {}
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
                out = tmp / f"{mode}-{name}-{n}.csv"
                got = run(src, out, *flags, *extra)
                results[mode, name, n] = got
                report(mode, name, n, got, out)
            worst, differ = compare(
                tmp / f"{mode}-one at a time-{args.baseline_rows}.csv",
                tmp / f"{mode}-defaults-{args.rows}.csv",
                args.baseline_rows,
            )
            results[mode, "equal"] = (worst, differ)
        if args.long_rows:
            src = write(tmp / "700.csv", [(p, "") for p in of_words(args.data, args.long_rows, 700)], posters=False)
            got = results["700 words"] = run(src, tmp / "700-out.csv", *flags, *new)
            report("700 words", "defaults", args.long_rows, got, tmp / "700-out.csv")
        print("\nsummary")
        for mode in ("plot", "plot+poster"):
            base = results[mode, "one at a time", args.baseline_rows]
            got, tenth = results[mode, "defaults", args.rows], results[mode, "defaults", max(1, args.rows // 10)]
            rate, base_rate = args.rows / got.seconds, args.baseline_rows / base.seconds
            print(
                f"  {mode:<12} one at a time {base_rate:.1f} rows/s; defaults {rate:.1f} rows/s = "
                f"{rate / base_rate:.2f}x (target >= 3x); peak PSS {tenth.peak:.0f} MB for {args.rows // 10} rows, "
                f"{got.peak:.0f} MB for {args.rows}"
            )
            (pss0, rss0), (pss1, rss1) = got.quarter_peaks()
            print(
                f"  {'':<12} memory over the {args.rows}-row run ({got.seconds:.0f} s): peak of its first quarter "
                f"PSS {pss0:.0f} MB / RSS {rss0:.0f} MB, of its last quarter PSS {pss1:.0f} MB / RSS {rss1:.0f} MB"
            )
            worst, differ = results[mode, "equal"]
            print(
                f"  {'':<12} defaults vs one at a time on the first {args.baseline_rows} rows: "
                f"largest probability difference {worst:.6f}, {differ} genre sets differ"
            )
        if args.long_rows:
            got = results["700 words"]
            (pss0, rss0), (pss1, rss1) = got.quarter_peaks()
            print(
                f"  {'700 words':<12} defaults {args.long_rows / got.seconds:.1f} rows/s; "
                f"{describe(windows_read(tmp / '700-out.csv'))}; first quarter PSS {pss0:.0f} / RSS {rss0:.0f} MB, "
                f"last quarter PSS {pss1:.0f} / RSS {rss1:.0f} MB"
            )
        for name, (seconds, peak) in started.items():
            print(f"  {name:<36} {seconds:.2f} s / 0.8 s, {peak:.0f} MB / 300 MB")
        print(f"  load average at the end {load():.2f}")


if __name__ == "__main__":
    main()
