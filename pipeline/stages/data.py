"""Curate the movie table and split it once: every later stage reads this stage's output.

Input: a folder with `movies.csv` (tmdb_id, title, release_date, original_language, genres,
overview, poster) and the posters it names; optionally (`extra`) a folder with more rows (overview +
genres + `source`, no posters). Output: `movies.csv` (curated, with `split` and `fold`), `extra.csv`
(curated extra rows: training rows only, never split, never evaluated), `labels.json` and
`curation.json` (rows in, rows out and why, for the site, per dataset).
"""

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit
from PIL import Image
from tqdm import tqdm

from pipeline import cache

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__)

REQUIRED = ["tmdb_id", "title", "genres", "overview", "poster"]


EXTRA_REQUIRED = ["tmdb_id", "title", "original_language", "genres", "overview", "source"]


_read: dict[tuple, pd.DataFrame] = {}  # movies.csv tables read in this process, by path, size and mtime


def read_movies(folder: Path, required=REQUIRED, flag="--data") -> pd.DataFrame:
    """The folder's movies.csv (a copy: callers may change it). Every stage's key asks for data.run's, many
    times a run, so an unchanged file is parsed once a process."""
    path = folder / "movies.csv"
    if not path.exists():
        sys.exit(f"error: no movies.csv in {folder} (pass {flag} DIR; see README)")
    st = path.stat()
    stamp = (str(path), st.st_size, st.st_mtime_ns)
    if stamp not in _read:
        df = pd.read_csv(path, dtype={"poster": str, "original_language": str}, keep_default_na=False)
        _read[stamp] = df
    df = _read[stamp]
    missing = [c for c in required if c not in df.columns]
    if missing:
        sys.exit(f"error: {path} lacks columns {missing}")
    return df.copy()


def poster_ok(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.convert("RGB").load()
        return True
    except Exception:
        return False


def multi_hot(genres: pd.Series, labels: list[str]) -> np.ndarray:
    index = {g: i for i, g in enumerate(labels)}
    y = np.zeros((len(genres), len(labels)), dtype=np.float32)
    for row, names in enumerate(genres):
        for g in names.split("|"):
            if g in index:
                y[row, index[g]] = 1
    return y


def normalised(overview: pd.Series) -> pd.Series:
    """Lower-case letters and digits only: the same plot however it is spaced or punctuated."""
    return overview.str.lower().map(lambda t: re.sub(r"[^0-9a-z]+", "", t))


def assert_disjoint(extra: pd.DataFrame, movies: pd.DataFrame) -> None:
    """Extra rows are training rows only: none may be a movie of the main data (by id or by plot)."""
    ids = sorted(set(extra.tmdb_id) & set(movies.tmdb_id))
    plots = set(normalised(movies.overview)) - {""}
    same = extra.tmdb_id[normalised(extra.overview).isin(plots)].tolist()
    if ids or same:
        sys.exit(
            f"error: the extra data shares movies with the main data ({len(ids)} tmdb_id, e.g. {ids[:5]}; "
            f"{len(same)} overviews, e.g. tmdb_id {same[:5]}): extra rows must never be evaluation rows. "
            "Remove them from the extra movies.csv."
        )


def curate_extra(extra: pd.DataFrame, folder: Path, labels: list[str], cfg) -> tuple[pd.DataFrame, list[dict]]:
    """Extra rows: every language kept here (which help is chosen by CV, stage `select`), short plots
    and duplicates dropped, genres cut to the main data's labels."""
    steps = []

    def step(name, before, after, why):
        steps.append({"step": name, "rows_in": before, "rows_out": after, "why": why})

    n = len(extra)
    step("load", n, n, f"rows of {folder.name}/movies.csv")
    english = int((extra.original_language == "en").sum())
    step("language", n, n, f"{english} English, {n - english} in other languages (kept; chosen by CV)")
    words = extra.overview.str.split().str.len().fillna(0)
    extra = extra[words >= cfg.min_words]
    step("drop short plots", n, len(extra), f"overviews under {cfg.min_words} words")
    n = len(extra)
    norm = normalised(extra.overview)
    extra = extra[~extra.tmdb_id.duplicated() & ~norm.duplicated()]
    step("drop duplicates", n, len(extra), "repeated tmdb_id or overview")
    n = len(extra)
    extra = extra.assign(genres=extra.genres.str.split("|").map(lambda gs: "|".join(g for g in gs if g in labels)))
    extra = extra[extra.genres != ""]
    step("genres", n, len(extra), "genres cut to the main data's labels; rows left with none dropped")
    keep = ["tmdb_id", "title", "original_language", "genres", "overview", "source"]
    return extra[keep].reset_index(drop=True), steps


def curate(df: pd.DataFrame, folder: Path, cfg) -> tuple[pd.DataFrame, list[str], list[dict]]:
    steps = []

    def step(name, before, after, why):
        steps.append({"step": name, "rows_in": before, "rows_out": after, "why": why})

    n = len(df)
    step("load", n, n, f"rows of {folder.name}/movies.csv")
    if "original_language" in df.columns:
        keep = {x.strip() for x in str(cfg.languages).split(",")}
        df = df[df.original_language.isin(keep)]
        step("drop non-English", n, len(df), f"original_language in {sorted(keep)}")
    n = len(df)
    words = df.overview.str.split().str.len().fillna(0)
    df = df[words >= cfg.min_words]
    step("drop short plots", n, len(df), f"overviews under {cfg.min_words} words")
    n = len(df)
    norm = df.overview.str.lower().str.split().str.join(" ")
    df = df[~df.tmdb_id.duplicated() & ~norm.duplicated()]
    step("drop duplicates", n, len(df), "repeated tmdb_id or identical overview")
    n = len(df)
    ok = [bool(p) and poster_ok(folder / p) for p in tqdm(df.poster, desc="checking posters")]
    df = df.assign(has_poster=ok)
    step("decodable poster", n, int(sum(ok)), f"{n - sum(ok)} without one stay as plot-only rows")
    counts = df.genres.str.split("|").explode().value_counts()
    labels = sorted(g for g, c in counts.items() if g and c >= cfg.min_genre_count)
    dropped = sorted(g for g, c in counts.items() if g and c < cfg.min_genre_count)
    df = df.assign(genres=df.genres.str.split("|").map(lambda gs: "|".join(g for g in gs if g in labels)))
    df = df[df.genres != ""]
    step("drop rare genres", n, len(df), f"genres under {cfg.min_genre_count} movies: {', '.join(dropped) or 'none'}")
    return df.reset_index(drop=True), labels, steps


def split(y: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
    """('dev'/'test' per row, fold per row), by iterative multi-label stratification.

    The test rows are set aside once and touched only by the final report. Every choice (epochs,
    thresholds, peers' regularisation) is made by cross-validation over the dev rows' `folds`
    (0..folds-1; -1 for test), and the shipped models then train on every dev row."""
    part = np.array(["dev"] * len(y), dtype=object)
    fold = np.full(len(y), -1)
    test_split = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=cfg.test_frac, random_state=cfg.seed)
    dev, test = next(test_split.split(np.arange(len(y)), y))
    part[test] = "test"
    kfold = MultilabelStratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed + 1)
    for k, (_, held) in enumerate(kfold.split(dev, y[dev])):
        fold[dev[held]] = k
    return part, fold


def extra_folder(cfg) -> Path | None:
    """The extra rows' folder, or None when `extra` is "" or names no folder."""
    if not cfg.get("extra"):
        return None
    folder = cfg.path("extra")
    if not (folder / "movies.csv").exists():
        print(f"[data] no extra rows: {folder}/movies.csv does not exist (pass --extra DIR, or --extra '')")
        return None
    return folder


def run(cfg) -> cache.Output:
    folder, extra_dir = cfg.path("data"), extra_folder(cfg)
    df = read_movies(folder)
    base = str(folder)  # os.path, not pathlib: every stage asks for this key, many times a run
    posters = [os.path.join(base, p) for p in df.poster if p and os.path.isfile(os.path.join(base, p))]
    parts = {
        "folder": str(folder.resolve()),  # curated rows keep absolute poster paths
        "movies": cache.file_digest(folder / "movies.csv"),
        "posters": cache.files_digest(posters),
        "extra": cache.file_digest(extra_dir / "movies.csv") if extra_dir else None,
        "config": cfg.subset("languages", "min_words", "min_genre_count", "folds", "test_frac", "seed"),
        "code": CODE,
    }

    def build(out: Path):
        extra_raw = read_movies(extra_dir, EXTRA_REQUIRED, "--extra") if extra_dir else None
        if extra_raw is not None:
            assert_disjoint(extra_raw, df)  # before any curation: against every row of the main data
        movies, labels, steps = curate(df, folder, cfg)
        movies["split"], movies["fold"] = split(multi_hot(movies.genres, labels), cfg)
        movies["poster"] = [str(folder / p) if ok else "" for p, ok in zip(movies.poster, movies.has_poster)]
        movies.drop(columns="has_poster").to_csv(out / "movies.csv", index=False)
        (out / "labels.json").write_text(json.dumps(labels))
        sizes = {"dev": int((movies.split == "dev").sum()), "test": int((movies.split == "test").sum())}
        folds = movies.fold[movies.fold >= 0].value_counts().sort_index().tolist()
        curation = {
            "steps": steps,
            "labels": labels,
            "split": sizes,
            "folds": folds,
            "with_poster": int(movies.has_poster.sum()),
        }
        extra = pd.DataFrame(columns=EXTRA_REQUIRED)  # no extra folder: no extra rows
        if extra_raw is not None:
            extra, curation["extra_steps"] = curate_extra(extra_raw, extra_dir, labels, cfg)
            curation["extra"] = {
                "rows": len(extra),
                "languages": {
                    "en": int((extra.original_language == "en").sum()),
                    "other": int((extra.original_language != "en").sum()),
                },
                "sources": extra.source.value_counts().sort_index().to_dict(),
                "genre_counts": multi_hot(extra.genres, labels).sum(0).astype(int).tolist(),
            }
        extra.to_csv(out / "extra.csv", index=False)
        (out / "curation.json").write_text(json.dumps(curation, indent=1))

    return cache.cached(cfg, "data", parts, build)


def load(out: cache.Output) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    """Curated movies, label names and their multi-hot matrix."""
    movies = pd.read_csv(out / "movies.csv", keep_default_na=False, dtype={"poster": str})
    labels = json.loads((out / "labels.json").read_text())
    return movies, labels, multi_hot(movies.genres, labels)


def load_extra(out: cache.Output) -> tuple[pd.DataFrame, np.ndarray]:
    """Curated extra rows (training rows only) and their multi-hot labels."""
    extra = pd.read_csv(out / "extra.csv", keep_default_na=False, dtype={"original_language": str, "source": str})
    return extra, multi_hot(extra.genres.astype(str), json.loads((out / "labels.json").read_text()))
