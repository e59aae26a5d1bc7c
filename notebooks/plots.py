"""Redraw every site figure and table from the pipeline's saved outputs, without retraining.

  .venv/bin/python notebooks/plots.py [--data DIR] [--key value ...]

The same as `python -m pipeline figures`: the stages it reads come from the cache (cache/), so
this takes well under two minutes once the pipeline has run with the same data and config.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from pipeline import config, figures  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    config.add_overrides(parser, config.load())
    cfg = config.from_args(parser.parse_args())
    start = time.perf_counter()
    out = figures.run(cfg)
    print(f"figures in {out} after {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
