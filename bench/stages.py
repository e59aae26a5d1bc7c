"""Wall time, peak memory and load average of each pipeline stage on this machine, from an empty cache.

  .venv/bin/python -m bench.stages --data DIR --extra DIR [--storylines DIR] [--long_plots DIR] [--work DIR] [--keep]   (make bench)

Each stage runs as its own process in stage order, so its time is its own work (upstream stages
are already cached). The load average is sampled every 5 s while a stage runs (mean and highest of
the 1-minute figure): a stage timed beside other work says so. Figures are printed, never asserted.
Targets: `make pipeline` ≤ 45 min on 2 idle cores, a re-run with nothing changed ≤ 1 min.
With --work the cache is that folder (kept): the run is then also the pipeline run that publishes.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STAGES = ["data", "embed", "select", "finetune", "long_text", "bag", "train", "evaluate", "export"]
STAGES += ["lengths", "topics", "explain", "figures", "publish"]


def run(stage: str, common: list[str]) -> tuple[float, float, list[float]]:
    """(seconds, peak resident MB, 1-minute load averages sampled every 5 s) of one stage process."""
    loads, done = [], threading.Event()

    def sample():
        while not done.wait(5):
            loads.append(os.getloadavg()[0])

    threading.Thread(target=sample, daemon=True).start()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", stage, *common],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    done.set()
    if status != 0:
        sys.exit(f"{stage} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024, loads or [os.getloadavg()[0]]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data")
    parser.add_argument("--extra", default="data_extra")
    parser.add_argument("--storylines", default="data_storylines")
    parser.add_argument("--long_plots", default="data_long")
    parser.add_argument("--work", help="cache folder to use and keep (default: a temporary one)")
    parser.add_argument("--site", action="store_true", help="publish into the repository (_data/, assets/)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary outputs")
    parser.add_argument("--stages", default=",".join(STAGES), help="the stages to time, in order")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mm-genre-bench-"))
    common = [
        "--data",
        args.data,
        "--extra",
        args.extra,
        "--storylines",
        args.storylines,
        "--long_plots",
        args.long_plots,
    ]
    common += ["--work", args.work or str(tmp / "cache")]
    common += (
        []
        if args.site
        else [
            "--site_data",
            str(tmp / "_data"),
            "--models",
            str(tmp / "models"),
            "--figures",
            str(tmp / "figures"),
        ]
    )
    print(f"{'stage':10s} {'seconds':>9s} {'peak MB':>9s} {'load mean':>10s} {'load max':>9s}   (outputs in {tmp})")
    total = 0.0
    for stage in args.stages.split(","):
        seconds, mb, loads = run(stage, common)
        total += seconds
        print(f"{stage:10s} {seconds:9.1f} {mb:9.0f} {sum(loads) / len(loads):10.2f} {max(loads):9.2f}", flush=True)
    seconds, _, _ = run("all", common)
    print(f"\nevery stage: {total / 60:.1f} min (target ≤ 45)")
    print(f"re-run with nothing changed: {seconds:.1f} s (target ≤ 60)")
    print(f"cores: {os.cpu_count()}")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
