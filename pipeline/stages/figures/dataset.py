"""The curated data: genres by fold and test split, genres per movie, co-occurrence, balancing, a sample."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from pipeline.learn import fusion
from pipeline.stages.figures.style import BLUE, GREEN, ORANGE, save


def genre_distribution(labels, y, fold, path: Path):
    """Movies per genre, stacked by dev fold and the test split (stratification keeps them alike)."""
    order = np.argsort(-y.sum(0))
    names = np.array(labels)[order]
    k = fold.max() + 1
    blues = plt.get_cmap("Blues")(np.linspace(0.85, 0.4, k))
    parts = [(f"dev fold {i + 1}", fold == i, blues[i]) for i in range(k)] + [("test", fold < 0, GREEN)]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(labels) + 1.6))
    left = np.zeros(len(labels))
    for name, rows, colour in parts:
        counts = y[rows].sum(0)[order]
        ax.barh(names, counts, left=left, color=colour, label=name)
        left += counts
    ax.invert_yaxis()
    ax.set_xlabel("movies")
    ax.legend(frameon=False, loc="lower right")
    ax.set_title("Genres in the curated data, by dev fold and test split")
    save(fig, path)


def genres_per_movie(y, path: Path):
    counts = y.sum(1).astype(int)
    values = np.arange(1, counts.max() + 1)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(values, [(counts == v).sum() for v in values], color=BLUE)
    ax.set_xlabel("genres per movie")
    ax.set_ylabel("movies")
    ax.set_xticks(values)
    save(fig, path)


def conditional(y) -> np.ndarray:
    both = y.T @ y
    return both / np.maximum(np.diag(both)[:, None], 1)  # P(column genre | row genre)


def strongest_pairs(labels, y, n: int = 3) -> list[list]:
    """The n (genre, its likeliest other genre, P) with the highest P, each genre once: the caption's pairs."""
    cond = conditional(y)
    np.fill_diagonal(cond, 0)
    pairs, used = [], set()
    for r in np.argsort(-cond.max(1)):
        c = int(cond[r].argmax())
        if len(pairs) < n and r not in used and c not in used:
            pairs.append([labels[r], labels[c], float(cond[r, c])])
            used |= {int(r), c}
    return pairs


def cooccurrence(labels, y, path: Path):
    cond = conditional(y)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(cond, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_title("P(column genre | row genre)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    save(fig, path)


def balancing(labels, y, dev, path: Path):
    """Dev genre counts as they are, and as the seed's balancing would resample them (expected)."""
    before = y[dev].sum(0)
    after = fusion.balance_weights(y[dev], 1.0) @ y[dev] * dev.sum()
    order = np.argsort(-before)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, before[order], 0.4, color=BLUE, label="dev rows")
    ax.bar(x + 0.2, after[order], 0.4, color=ORANGE, label="after balancing (expected)")
    ax.set_xticks(x, np.array(labels)[order], rotation=60, ha="right")
    ax.set_ylabel("movies")
    ax.legend(frameon=False)
    ax.set_title("Genre counts before and after the seed's balancing (dev rows)")
    save(fig, path)


def samples(movies, n: int, seed: int, out: Path) -> list[dict]:
    """A few curated movies for the data table: no overview text, a small poster thumbnail in out/."""
    out.mkdir(exist_ok=True)
    with_poster = np.flatnonzero((movies.poster != "").to_numpy())
    rows = np.random.default_rng(seed).choice(with_poster, size=min(n, len(with_poster)), replace=False)
    found = []
    for r in sorted(rows):
        tid = int(movies.tmdb_id[r])
        with Image.open(movies.poster[r]) as im:
            im.convert("RGB").resize((46, 69)).save(out / f"{tid}.jpg", quality=80)
        found.append(
            {
                "tmdb_id": tid,
                "title": movies.title[r],
                "year": str(movies.release_date[r])[:4],
                "genres": movies.genres[r].replace("|", ", "),
                "words": len(movies.overview[r].split()),
                "split": movies.split[r],
                "thumb": f"{out.name}/{tid}.jpg",
            }
        )
    return found


def draw(movies, labels, y, cfg, out: Path) -> dict:
    fold = movies.fold.to_numpy()
    genre_distribution(labels, y, fold, out / "genre_distribution.png")
    genres_per_movie(y, out / "genres_per_movie.png")
    cooccurrence(labels, y, out / "cooccurrence.png")
    balancing(labels, y, fold >= 0, out / "balancing.png")
    return {
        "genres_per_movie_mean": float(y.sum(1).mean()),
        "genres_by_count": [labels[i] for i in np.argsort(-y.sum(0), kind="stable")],  # the distribution figure's order
        "strongest_pairs": strongest_pairs(labels, y),  # the co-occurrence figure's strongest cells
        "samples": samples(movies, cfg.sample_rows, cfg.seed, out / "thumbs"),
    }
