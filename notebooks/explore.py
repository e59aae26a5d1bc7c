"""Exploration: what the curated data looks like (genre counts, genres per movie, plot lengths).

Run after `python -m pipeline data`:  .venv/bin/python notebooks/explore.py [--data DIR]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from pipeline import config
from pipeline.stages import data


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    config.add_overrides(parser, config.load())
    cfg = config.from_args(parser.parse_args())
    movies, labels, y = data.load(data.run(cfg))
    print(f"{len(movies)} movies, {len(labels)} genres, {int((movies.poster != '').sum())} with posters")
    print("\ngenre counts (all splits):")
    for g, n in sorted(zip(labels, y.sum(0).astype(int)), key=lambda t: -t[1]):
        print(f"  {g:16s} {n:5d}")
    per_movie = y.sum(1)
    print(f"\ngenres per movie: mean {per_movie.mean():.2f}, max {int(per_movie.max())}")
    words = movies.overview.str.split().str.len()
    print(f"plot words: mean {words.mean():.0f}, median {words.median():.0f}, max {words.max()}")
    print("\nsplit sizes:", movies.split.value_counts().to_dict())


if __name__ == "__main__":
    main()
