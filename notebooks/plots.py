"""Redraw the site's figures from the pipeline's cached outputs (cache/), training nothing.

  .venv/bin/python notebooks/plots.py [--data DIR] [--extra DIR] [--key value ...]

It needs a finished pipeline run (`make pipeline DATA=...`) with the same data and config: the
figures and the error analysis are drawn again from the cached stage outputs and published
(assets/figures/, _data/) as `python -m pipeline publish` does. If any other stage has no cached
output for this data and config (a fresh clone, another data folder, a changed key), it stops with
a message naming that stage instead of training it.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from pipeline import cache, config
from pipeline.stages import publish

REDRAWN = {"figures", "errors"}  # the stages this script may (re)compute: drawing only


class NotCached(SystemExit):
    pass


def only_cached(build_once):
    """cache.build_once, refusing to build any stage but the drawing ones."""

    def guarded(name, path, key, parts, build):
        if name in REDRAWN or (path / ".done").exists():
            return build_once(name, path, key, parts, build)
        raise NotCached(
            f"error: notebooks/plots.py only redraws from cache/, but stage '{name}' has no cached output for "
            f"this data and config ({path} is missing). Run the pipeline first with the same data and "
            "config: make pipeline DATA=/path/to/tmdb5000 EXTRA=/path/to/tmdb_extra"
        )

    return guarded


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    config.add_overrides(parser, config.load())
    cfg = config.from_args(parser.parse_args(argv))
    if not (cfg.path("data") / "movies.csv").exists():
        raise NotCached(
            f"error: no {cfg.path('data')}/movies.csv: the cached stages are keyed by the data they read, so "
            "pass the folder the pipeline ran on (--data DIR)"
        )
    cache.build_once = only_cached(cache.build_once)
    start = time.perf_counter()
    publish.run(cfg)
    print(f"figures redrawn from {cfg.path('work')} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
