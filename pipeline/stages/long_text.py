"""Stage `long_text`: texts longer than an overview, read window by window by the fine-tuned encoder.

Three kinds of text, each tied to a main-set movie where it can be (it then belongs to that movie's fold
or to the test split, like the movie's overview):
  storyline  IMDb's storyline of a main-set movie (`storylines`; median 93 words): another writer, same labels
  joined     the movie's overview and storyline as one text (up to ~400 words; a fifth over one window)
  long_plot  `long_plots`: Wikipedia plot sections and IMDb synopses (median 718 words), scored only
Each text is cut into windows by the shared rule (pipeline/runtime/rules.py) at every candidate stride, and
every distinct window is embedded once, so `train` can pool them every candidate way without the encoder.
No label is read here: the encoder (`finetune`) learned from the extra rows only.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import cache
from pipeline.learn import text
from pipeline.runtime import rules
from pipeline.stages import data, finetune

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, text.__file__, rules.__file__)

KINDS = ("storyline", "joined", "long_plot")
# long_plots' `match`, as this project reports it (the folder's README): where a score is honest
GROUPS = {
    "tmdb5000": "main",  # a main-set movie: scored by the head that did not learn its fold (or as a test row)
    "none": "unseen",  # no shared-data movie: scored by the shipped heads
    "tmdb_extra": "extra",  # the encoder learned its overview: optimistic, reported apart
    "tmdb_extra (title only)": "extra",
    "tmdb5000 (title only)": "title_only",  # matched by title alone (may be a remake): reported apart
}
NO_MOVIE = -1  # `row` of a text tied to no main-set movie


def strides(cfg) -> list[int]:
    """config's window_strides; each from 1 to max_len - 2 (a longer stride would skip text tokens)."""
    out = [int(s) for s in str(cfg.window_strides).split(",")]
    if not all(1 <= s <= cfg.max_len - 2 for s in out):
        raise ValueError(f"window_strides {cfg.window_strides!r}: each from 1 to max_len - 2 = {cfg.max_len - 2}")
    return out


def folder(cfg, key: str, name: str) -> Path | None:
    """The folder a config key names, or None when the key is "" or the folder lacks `name`."""
    if not cfg.get(key):
        return None
    path = cfg.path(key)
    if not (path / name).exists():
        print(f"[long_text] no {key}: {path}/{name} does not exist (pass --{key} DIR, or --{key} '')")
        return None
    return path


def collect(cfg, movies: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """One row per text: kind, text, row (its main-set movie, or NO_MOVIE), group, genres, source."""
    out = []
    where = {int(t): i for i, t in enumerate(movies.tmdb_id)}
    stories = folder(cfg, "storylines", "storylines.csv")
    if stories is not None:
        table = pd.read_csv(stories / "storylines.csv", keep_default_na=False)
        for tmdb_id, story in zip(table.tmdb_id, table.storyline):
            row = where.get(int(tmdb_id))
            if row is None or not story.strip():
                continue  # a movie curation dropped
            common = {"row": row, "group": "main", "genres": movies.genres[row], "source": "imdb_storyline"}
            out.append({"kind": "storyline", "text": story, **common})
            out.append({"kind": "joined", "text": f"{movies.overview[row]} {story}", **common})
    plots = folder(cfg, "long_plots", "movies.csv")
    if plots is not None:
        table = pd.read_csv(plots / "movies.csv", keep_default_na=False, dtype={"tmdb_id": str})
        known = set(labels)
        for r in table.itertuples():
            genres = "|".join(g for g in r.genres.split("|") if g in known)
            if not genres:
                continue  # no label to score it against
            group = GROUPS[r.match]
            row = where.get(int(r.tmdb_id)) if r.tmdb_id and group in ("main", "title_only") else None
            row = NO_MOVIE if row is None else row
            out.append(
                {"kind": "long_plot", "text": r.plot, "row": row, "group": group, "genres": genres, "source": r.source}
            )
    cols = ["kind", "text", "row", "group", "genres", "source"]
    return pd.DataFrame(out, columns=cols)


def run(cfg) -> cache.Output:
    curated, tuned = data.run(cfg), finetune.run(cfg)
    parts = {
        "data": curated.key,
        "text": tuned.key,
        "storylines": cache.file_digest(p / "storylines.csv")
        if (p := folder(cfg, "storylines", "storylines.csv"))
        else None,
        "long_plots": cache.file_digest(p / "movies.csv") if (p := folder(cfg, "long_plots", "movies.csv")) else None,
        "config": cfg.subset("text_backbone", "max_len", "window_strides"),
        "code": CODE,
    }

    def build(out: Path):
        torch.set_num_threads(cfg.threads)
        movies, labels, _ = data.load(curated)
        texts = collect(cfg, movies, labels)
        tok = text.load_tokenizer(cfg.text_backbone)
        ids = [tok.encode(t[: rules.MAX_CHARS]).ids for t in texts.text]
        distinct: dict[tuple, int] = {}  # a window's ids → its row in windows.npy
        index = {}
        for stride in strides(cfg):
            rule = rules.truncation(cfg.max_len, stride)
            per_text = [[distinct.setdefault(tuple(w), len(distinct)) for w in rules.windows(i, rule)] for i in ids]
            index[f"windows_{stride}"] = (
                np.concatenate([np.array(w, np.int64) for w in per_text]) if ids else np.zeros(0)
            )
            index[f"count_{stride}"] = np.array([len(w) for w in per_text], np.int64)
        encoder = text.TextEncoder(cfg.text_backbone, tuned / "encoder.safetensors").eval()
        np.save(out / "windows.npy", embed_windows(encoder, list(distinct), cfg.text_batch))
        np.savez(out / "index.npz", **index)
        texts.assign(words=texts.text.str.split().str.len(), tokens=[len(i) for i in ids]).to_csv(
            out / "texts.csv", index=False
        )

    return cache.cached(cfg, "long_text", parts, build)


@torch.no_grad()
def embed_windows(encoder: text.TextEncoder, windows: list[tuple], batch: int) -> np.ndarray:
    """[windows, dim]: each window's mean-pooled states, windows of similar length batched together."""
    out = np.zeros((len(windows), encoder.dim), np.float32)
    order = np.argsort([len(w) for w in windows], kind="stable")
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        out[rows] = encoder(*text.pad([list(windows[i]) for i in rows])).numpy()
        if start // batch % 50 == 0:
            print(f"[long_text] {start + len(rows)} / {len(windows)} windows", flush=True)
    return out


class LongTexts:
    """What the stage wrote: the texts and, per stride, their windows' embeddings."""

    def __init__(self, out: cache.Output, labels: list[str]):
        self.key, self.labels = out.key, labels
        self.texts = pd.read_csv(out / "texts.csv", keep_default_na=False)
        self.y = data.multi_hot(self.texts.genres, labels)
        self.windows = np.load(out / "windows.npy")
        with np.load(out / "index.npz") as f:
            self.index = {k: f[k] for k in f.files}

    def window_rows(self, stride: int) -> list[np.ndarray]:
        """Per text, the rows of windows.npy it reads at `stride`, in order."""
        counts = self.index[f"count_{stride}"]
        return np.split(self.index[f"windows_{stride}"], np.cumsum(counts)[:-1]) if len(counts) else []

    def mean_embeddings(self, stride: int) -> np.ndarray:
        """[texts, dim]: the mean of each text's window embeddings (pool "mean_embedding")."""
        rows = self.window_rows(stride)
        return np.stack([rules.pool(self.windows[r], "mean_embedding") for r in rows]) if rows else self.windows[:0]


def load(cfg, labels: list[str]) -> LongTexts:
    return LongTexts(run(cfg), labels)
