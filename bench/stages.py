"""Wall time and peak memory of each pipeline stage on this machine, from an empty cache.

  .venv/bin/python -m bench.stages --data DIR [--keep]   (make bench)

Each stage runs as its own process in stage order, so its time is its own work (upstream stages
are already cached). Figures are printed, never asserted. Targets: data → exported models ≤ 30 min
(cross-fitting included), a re-run with nothing changed ≤ 1 min.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ["data", "finetune", "embed", "train", "evaluate", "export", "topics", "explain", "figures", "publish"]


def run(stage: str, common: list[str]) -> tuple[float, float]:
    """(seconds, peak resident MB) of one stage process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", stage, *common],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{stage} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data")
    parser.add_argument("--keep", action="store_true", help="keep the temporary outputs")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mm-genre-bench-"))
    common = [
        "--data",
        args.data,
        "--work",
        str(tmp / "cache"),
        "--site_data",
        str(tmp / "_data"),
        "--models",
        str(tmp / "models"),
        "--figures",
        str(tmp / "figures"),
    ]
    print(f"{'stage':10s} {'seconds':>9s} {'peak MB':>9s}   (outputs in {tmp})")
    total = to_models = 0.0
    for stage in STAGES:
        seconds, mb = run(stage, common)
        total += seconds
        to_models += seconds if STAGES.index(stage) <= STAGES.index("export") else 0
        print(f"{stage:10s} {seconds:9.1f} {mb:9.0f}", flush=True)
    seconds, _ = run("all", common)
    print(f"\ndata → exported models: {to_models / 60:.1f} min (target ≤ 30); every stage: {total / 60:.1f} min")
    print(f"re-run with nothing changed: {seconds:.1f} s (target ≤ 60)")
    print(f"cores: {os.cpu_count()}")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
