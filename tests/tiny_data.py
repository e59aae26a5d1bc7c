"""A tiny dataset in the format of ../shared/data/tmdb5000 (and of ../shared/data/tmdb_extra: `make_extra`),
invented for the tests.

Four genres, each with its own vocabulary and poster colour, so that even a few dozen movies
carry a learnable signal; plus one row for each curation rule to catch.
"""

import csv
import random
from pathlib import Path

from PIL import Image, ImageDraw

GENRES = {
    "Action": (("explosion", "chase", "soldier", "mercenary", "heist", "gunfight", "rescue"), (200, 40, 30)),
    "Comedy": (("wedding", "awkward", "roommate", "prank", "hilarious", "mix-up", "family dinner"), (250, 210, 60)),
    "Horror": (("haunted", "demon", "blood", "cabin", "ghost", "possessed", "scream"), (20, 20, 30)),
    "Romance": (("love", "kiss", "heart", "summer", "letters", "longing", "first date"), (230, 120, 170)),
}
FILLER = ("a young woman", "an old man", "two friends", "a stranger", "the town", "one night", "after years")


def plot(rng: random.Random, genres: list[str]) -> str:
    words = [w for g in genres for w in rng.sample(GENRES[g][0], 3)]
    rng.shuffle(words)
    parts = [f"{rng.choice(FILLER)} finds {w}" for w in words]
    return ". ".join(parts).capitalize() + "."


def poster(path: Path, rng: random.Random, genres: list[str], size=(185, 278)):
    colour = GENRES[genres[0]][1]
    im = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        shade = tuple(min(255, c + rng.randrange(60)) for c in GENRES[genres[-1]][1])
        draw.ellipse([x, y, x + rng.randrange(10, 60), y + rng.randrange(10, 60)], fill=shade)
    im.save(path, quality=90)


def make(folder: Path, n: int = 64, seed: int = 0) -> Path:
    rng = random.Random(seed)
    (folder / "posters").mkdir(parents=True, exist_ok=True)
    names = list(GENRES)
    rows = []
    for i in range(n):
        genres = rng.sample(names, rng.choice((1, 1, 2)))
        tmdb_id = 1000 + i
        size = (185, 278) if i % 3 else (300, 450)
        poster(folder / "posters" / f"{tmdb_id}.jpg", rng, genres, size)
        rows.append(
            [
                tmdb_id,
                f"Movie {i}",
                f"20{i % 20:02d}-01-01",
                "en",
                "|".join(genres),
                plot(rng, genres),
                f"posters/{tmdb_id}.jpg",
                "en",
            ]
        )
    # one row for each curation rule
    rows.append([2000, "Ausland", "2001-01-01", "de", "Drama|Action", plot(rng, ["Action"]), "posters/1000.jpg", "en"])
    rows.append([2001, "Short", "2001-01-01", "en", "Comedy", "Too short to keep.", "posters/1001.jpg", "en"])
    rows.append([2002, "Copy", "2001-01-01", "en", rows[0][4], rows[0][5], "posters/1000.jpg", "en"])
    (folder / "posters" / "2003.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    rows.append([2003, "Broken poster", "2001-01-01", "en", "Horror", plot(rng, ["Horror"]), "posters/2003.jpg", "en"])
    rows.append([2004, "Rare genre", "2001-01-01", "en", "Western", plot(rng, ["Action"]), "posters/1002.jpg", "en"])
    with open(folder / "movies.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["tmdb_id", "title", "release_date", "original_language", "genres", "overview", "poster", "poster_kind"]
        )
        w.writerows(rows)
    return folder


EXTRA_SOURCES = ("snapshot_a", "snapshot_b")


def make_extra(folder: Path, n: int = 48, seed: int = 1) -> Path:
    """Extra rows (overview + genres + source, no posters), none of them a movie of `make`."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(GENRES)
    rows = []
    for i in range(n):
        genres = rng.sample(names, rng.choice((1, 1, 2)))
        language = "en" if i % 6 else "fr"
        rows.append(
            [5000 + i, f"Extra {i}", "2010-01-01", language, "|".join(genres), plot(rng, genres), EXTRA_SOURCES[i % 2]]
        )
    # one row for each curation rule
    rows.append([6000, "Short", "2001-01-01", "en", "Comedy", "Too short.", EXTRA_SOURCES[0]])
    rows.append([6001, "Copy", "2001-01-01", "en", rows[0][4], rows[0][5].upper(), EXTRA_SOURCES[1]])
    rows.append([6002, "TV only", "2001-01-01", "en", "TV Movie", plot(rng, ["Horror"]), EXTRA_SOURCES[0]])
    with open(folder / "movies.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tmdb_id", "title", "release_date", "original_language", "genres", "overview", "source"])
        w.writerows(rows)
    return folder


def make_storylines(folder: Path, movies: Path, seed: int = 2) -> Path:
    """A storyline (another text of the same genres, longer than the overview) for every movie of `make`."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(movies / "movies.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if all(g in GENRES for g in r["genres"].split("|"))]
    with open(folder / "storylines.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tmdb_id", "storyline"])
        for r in rows:
            genres = r["genres"].split("|")
            w.writerow([r["tmdb_id"], " ".join(plot(rng, genres) for _ in range(2))])
    return folder


def make_long_plots(folder: Path, movies: Path, n_unseen: int = 6, seed: int = 3) -> Path:
    """long_plots' format: a long text (several windows at the tiny run's max_len) for some movies of `make`
    (match tmdb5000), some of `make_extra` (tmdb_extra), some in neither (none)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(movies / "movies.csv", newline="") as f:
        tied = [r for r in csv.DictReader(f) if r["tmdb_id"].startswith("10")][:24]
    rows = []

    def long(genres):
        return " ".join(plot(rng, genres) for _ in range(8))

    for r in tied:
        rows.append(
            [
                r["tmdb_id"],
                r["title"],
                2001,
                "tmdb5000",
                r["genres"],
                "",
                "wikipedia_2015_2017",
                long(r["genres"].split("|")),
            ]
        )
    for i in range(n_unseen):
        genres = rng.sample(list(GENRES), 1)
        rows.append(["", f"Unseen {i}", 2016, "none", genres[0], "", "wikipedia_2015_2017", long(genres)])
    rows.append([5000, "Extra 0", 2010, "tmdb_extra", "Comedy", "", "top100_imdb_plot", long(["Comedy"])])
    rows.append(["", "No genre", 2016, "none", "", "", "wikipedia_2015_2017", long(["Horror"])])
    with open(folder / "movies.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tmdb_id", "title", "year", "match", "genres", "source_genre", "source", "plot"])
        w.writerows(rows)
    return folder
