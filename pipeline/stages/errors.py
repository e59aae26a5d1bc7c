"""Error analysis of the shipped files on the test split, from the stages' cached outputs.

Nothing here trains or re-scores: it reads the data stage's movies.csv (split, title, poster), the
probabilities the shipped files gave every test movie through predict's code (export's
shipped_probs.npz), evaluate's probs.npz (the peers' probabilities; their thresholds fitted again by the same
out-of-fold rule, choose/thresholds.fit) and metrics.json (the shipped thresholds of each input mode), applies the shipped decision rule and
writes errors.json (for _data/errors.json), a confusion figure and small poster thumbnails:

- which genres are predicted for which: false positives of genre B among test movies whose true
  genres include A (a genre-pair table and a heatmap);
- where the poster helped and where it hurt: per test movie with a poster, the plot-only and the
  plot + poster predictions against the truth (counts, the clearest examples both ways, and the paired
  bootstrap interval of plot + poster minus plot only on those movies);
- the shipped files' margin over the best peer, with its paired bootstrap interval (the targets table);
- the genres the model gets least right, with the evidence for a likely reason: few examples,
  a genre defined by form rather than plot, the genre it is taken for, confident "false"
  positives (a sign of labels that TMDB's snapshots disagree on);
- the longest test plots in tokens of the shipped tokenizer, against the encoder's window.

Every count is computed here; the page prints them from _data/errors.json.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline import cache
from pipeline.choose import thresholds
from pipeline.runtime import rules
from pipeline.stages import data, evaluate, export
from pipeline.stages.evaluate import bootstrap

CODE = cache.source_digest(__file__, rules.__file__)
KEYS = ("seed", "max_len", "threshold_shrinks")
MODES = ("plot", "plot+poster")
# Genres whose definition is the film's form (how it is made), not its story: a plot summary says
# little about them. A judgement, written here once; the page shows the measured numbers beside it.
FORM_GENRES = ("Animation", "Documentary", "Music")
THUMB = (92, 138)  # px of the poster thumbnails the page shows (2:3, as TMDB posters)
EXAMPLES = 4  # examples each way (poster helped, poster hurt)
PAIRS = 12  # genre pairs in the table
WEAKEST = 4  # genres in the "least right" list (plus any never right)
LONGEST = 3  # longest test plots listed
CONFIDENT = 0.6  # a "false" positive at or above this probability counts as confident


def shipped_ids(metrics: dict) -> dict[str, str]:
    """The shipped model of each input mode, as evaluate chose it."""
    return {mode: metrics["comparison"][mode]["shipped"] for mode in MODES}


def thresholds_for(metrics: dict, mode: str, labels: list[str]) -> np.ndarray:
    """Per-genre thresholds of a mode's shipped model (metrics.thresholds is keyed by mode, then genre)."""
    return np.array([float(metrics["thresholds"][mode][g]) for g in labels])


def test_mask(movies: pd.DataFrame, n_probs: int) -> np.ndarray:
    """The test rows of movies.csv (the main set's curated rows, the rows probs.npz holds, in order)."""
    if len(movies) != n_probs:
        raise ValueError(f"probs.npz has {n_probs} rows, movies.csv {len(movies)}: not the same run")
    return (movies.split == "test").to_numpy()


def names(row: np.ndarray, labels: list[str]) -> list[str]:
    return [labels[i] for i in np.flatnonzero(row)]


def sample_f1(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-movie F1 between true and predicted genre sets."""
    tp = (y * pred).sum(1)
    return 2 * tp / np.maximum(y.sum(1) + pred.sum(1), 1)


def confusion(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """share[a, b]: among test movies with true genre a, the share predicted b without having b."""
    fp = pred * (1 - y)
    counts = y.T @ fp  # [true a, predicted b]
    support = y.sum(0)
    share = counts / np.maximum(support[:, None], 1)
    np.fill_diagonal(share, 0)
    pairs = []
    for a, b in zip(*np.unravel_index(np.argsort(-counts, axis=None), counts.shape)):
        if a == b or counts[a, b] == 0:
            continue
        pairs.append(
            {
                "true": labels[a],
                "predicted": labels[b],
                "movies": int(counts[a, b]),
                "of": int(support[a]),
                "share": float(share[a, b]),
                # how often the pair is real: true b among true a's test movies (co-occurrence)
                "both_true": int((y[:, a] * y[:, b]).sum()),
            }
        )
        if len(pairs) == PAIRS:
            break
    return share, counts, pairs


def thumb(poster: str, out: Path, tmdb_id) -> str | None:
    """A small JPEG of a test poster (a derived thumbnail, not the data) for the examples."""
    if not poster or not Path(poster).is_file():
        return None
    name = f"{tmdb_id}.jpg"
    with Image.open(poster) as im:
        im = im.convert("RGB")
        im.thumbnail((THUMB[0] * 2, THUMB[1] * 2))  # 2x for sharp phones
        im.save(out / "thumbs" / name, quality=82, optimize=True)
    return f"thumbs/{name}"


def poster_effect(movies, y, pred, labels, out: Path, seed: int = 0) -> dict:
    """Per test movie with a poster: did plot + poster do better or worse than plot alone? And over those
    movies, F1 of plot + poster minus plot only with its paired bootstrap interval."""
    has = np.array([bool(p) for p in movies.poster])
    plot, both = pred["plot"], pred["plot+poster"]
    f_plot, f_both = sample_f1(y, plot), sample_f1(y, both)
    diff = np.where(has, f_both - f_plot, 0)
    added, removed = both & ~plot, plot & ~both
    good = (added & y).sum() + (removed & ~y).sum()  # correct genres added + wrong ones removed
    bad = (added & ~y).sum() + (removed & y).sum()
    changed = has & (plot != both).any(1)

    def example(i) -> dict:
        m = movies.iloc[i]
        year = str(m.get("release_date", ""))[:4]
        return {
            "tmdb_id": int(m.tmdb_id),
            "title": str(m.title),
            "year": year,
            "thumb": thumb(m.poster, out, m.tmdb_id),
            "truth": names(y[i], labels),
            "plot": names(plot[i], labels),
            "plot+poster": names(both[i], labels),
            "f1_plot": float(f_plot[i]),
            "f1_plot+poster": float(f_both[i]),
        }

    order = np.argsort(-diff, kind="stable")
    helped = [int(i) for i in order if diff[i] > 0][:EXAMPLES]
    hurt = [int(i) for i in order[::-1] if diff[i] < 0][:EXAMPLES]
    return {
        "movies": int(has.sum()),
        "changed": int(changed.sum()),
        "helped": int((diff > 0).sum()),
        "hurt": int((diff < 0).sum()),
        "same": int((has & (diff == 0)).sum()),
        "genre_changes": {
            "added_right": int((added & y)[has].sum()),
            "removed_wrong": int((removed & ~y)[has].sum()),
            "added_wrong": int((added & ~y)[has].sum()),
            "removed_right": int((removed & y)[has].sum()),
            "good": int(good),
            "bad": int(bad),
        },
        "mean_f1": {"plot": float(f_plot[has].mean()), "plot+poster": float(f_both[has].mean())} if has.any() else None,
        "paired": {"movies": int(has.sum()), **paired_points(y[has], both[has], plot[has], seed)}
        if has.any()
        else None,
        "helped_examples": [example(i) for i in helped],
        "hurt_examples": [example(i) for i in hurt],
    }


def per_genre(y, pred, probs, labels, dev_counts: dict, counts) -> list[dict]:
    out = []
    f1_plot = {}
    for mode in MODES:
        p = pred[mode]
        tp, fp, fn = (p & y).sum(0), (p & ~y).sum(0), (~p & y).sum(0)
        f1_plot[mode] = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    p = pred["plot+poster"]
    tp, fp, fn = (p & y).sum(0), (p & ~y).sum(0), (~p & y).sum(0)
    prob = probs["plot+poster"]
    for j, g in enumerate(labels):
        confident = int(((prob[:, j] >= CONFIDENT) & ~y[:, j]).sum())
        # the true genre most of this genre's false positives carry (counts[a, j]: true a, predicted j)
        source = int(np.argmax(counts[:, j])) if fp[j] else None
        out.append(
            {
                "genre": g,
                "test_movies": int(y[:, j].sum()),
                "dev_movies": int(dev_counts.get(g, 0)),
                "right": int(tp[j]),
                "false_positives": int(fp[j]),
                "missed": int(fn[j]),
                "f1": float(f1_plot["plot+poster"][j]),
                "f1_plot": float(f1_plot["plot"][j]),
                "confident_false_positives": confident,
                "false_positives_from": labels[source] if source is not None else None,
                "false_positives_from_share": float(counts[source, j] / fp[j]) if source is not None else 0.0,
                "form": g in FORM_GENRES,
            }
        )
    return out


def reasons(g: dict, median_dev: float) -> list[str]:
    """Likely reasons, each backed by a number in the same record (the page words them)."""
    why = []
    if g["dev_movies"] < median_dev / 2:
        why.append("support")
    if g["form"]:
        why.append("form")
    if g["false_positives_from"] and g["false_positives_from_share"] >= 0.3:
        why.append("confused")
    if g["confident_false_positives"] >= max(3, 0.25 * g["false_positives"]):  # a few, not one stray
        why.append("labels")
    return why


def token_lengths(movies, test, tokenizer: Path, window: int) -> dict:
    """Untruncated token counts of the test plots (the shipped tokenizer, special tokens included)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    tok.no_truncation()
    tok.no_padding()
    plots = movies.overview[test].tolist()
    counts = np.array([len(e.ids) for e in tok.encode_batch(plots)])
    words = movies.overview[test].str.split().str.len().to_numpy()
    order = np.argsort(-counts, kind="stable")[:LONGEST]
    titles = movies.title[test].to_numpy()
    return {
        "window": int(window),
        "movies": int(len(counts)),
        "max_tokens": int(counts.max()),
        "p99_tokens": float(np.percentile(counts, 99)),
        "median_tokens": float(np.median(counts)),
        "over_window": int((counts > window).sum()),
        "all_within": bool((counts <= window).all()),
        "max_words": int(words.max()),
        "longest": [{"title": str(titles[i]), "words": int(words[i]), "tokens": int(counts[i])} for i in order],
    }


def draw_confusion(share, labels, path: Path):
    import matplotlib.pyplot as plt

    from pipeline.stages.figures.style import save

    fig, ax = plt.subplots(figsize=(7.5, 6.8))
    im = ax.imshow(share, cmap="Oranges", vmin=0, vmax=max(0.05, float(share.max())))
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted (not a true genre of the movie)")
    ax.set_ylabel("true genre")
    ax.set_title("False positives given the true genre, test split")
    for a in range(len(labels)):
        for b in range(len(labels)):
            if share[a, b] >= 0.1:
                ax.text(b, a, f"{share[a, b]:.0%}".rstrip("%"), ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.04, label="share of the row genre's test movies")
    save(fig, path)


def paired_points(y: np.ndarray, pred: np.ndarray, other: np.ndarray, seed: int) -> dict:
    """F1 of pred minus F1 of other on the same movies, in points, with its paired bootstrap 95 % interval."""
    ci = bootstrap(y, pred, seed, other)
    point = np.subtract(thresholds.f1_pair(y, pred), thresholds.f1_pair(y, other))
    return {
        avg: {"diff": 100 * float(point[i]), "lo": 100 * ci[f"{avg}_f1_ci"][0], "hi": 100 * ci[f"{avg}_f1_ci"][1]}
        for i, avg in enumerate(("micro", "macro"))
    }


def shipped_margin(y, pred, probs, fold, shrinks, test, metrics, seed: int) -> dict:
    """Per mode: the shipped files' F1 minus the best peer's (fp32: peers do not ship) on the test movies, the
    peer decided by the thresholds evaluate gave it (thresholds.fit on its out-of-fold rows, deterministic)."""
    out = {}
    for mode in MODES:
        peer = metrics["peers"]["best"][mode]
        cut, _ = thresholds.fit(probs[peer], y, fold, shrinks)
        peer_pred = rules.decide(probs[peer][test], cut)
        out[mode] = {"best_peer": peer, **paired_points(y[test].astype(bool), pred[mode], peer_pred, seed)}
    return out


def analyse(
    movies, labels, y, shipped, probs, metrics, tokenizer: Path | None, window: int, out: Path, seed=0, shrinks=()
):
    """`shipped`: {mode: the shipped files' probabilities of the test movies, in movies.csv order}."""
    test = test_mask(movies, len(next(iter(probs.values()))))
    ids = shipped_ids(metrics)
    yt = y[test].astype(bool)
    tm = movies[test].reset_index(drop=True)
    p = {mode: shipped[mode] for mode in MODES}
    if any(len(v) != test.sum() for v in p.values()):
        raise ValueError("shipped_probs.npz does not hold one row per test movie: not the same run")
    pred = {mode: rules.decide(p[mode], thresholds_for(metrics, mode, labels)) for mode in MODES}
    share, counts, pairs = confusion(yt.astype(float), pred["plot+poster"].astype(float), labels)
    dev = ~test
    dev_counts = dict(zip(labels, y[dev].sum(0).astype(int).tolist()))
    genres = per_genre(yt, pred, p, labels, dev_counts, counts)
    median_dev = float(np.median([g["dev_movies"] for g in genres]))
    for g in genres:
        g["reasons"] = reasons(g, median_dev)
    never = [g["genre"] for g in genres if g["right"] == 0 and g["test_movies"] > 0]
    weakest = [g["genre"] for g in sorted(genres, key=lambda g: g["f1"]) if g["genre"] not in never][:WEAKEST]
    (out / "thumbs").mkdir(exist_ok=True)
    draw_confusion(share, labels, out / "confusion.png")
    result = {
        "models": ids,
        "decision": "the shipped files through predict's code, with the shipped thresholds of each mode",
        "test_movies": int(test.sum()),
        "pairs": pairs,
        "poster": poster_effect(tm, yt, pred, labels, out, seed),
        "shipped_margin": shipped_margin(y, pred, probs, movies.fold.to_numpy(), shrinks, test, metrics, seed),
        "genres": genres,
        "never_right": never,
        "weakest": weakest,
        "median_dev_movies": median_dev,
        "confident": CONFIDENT,
        "form_genres": [g for g in FORM_GENRES if g in labels],
    }
    if tokenizer is not None and tokenizer.is_file():
        result["lengths"] = token_lengths(movies, test, tokenizer, window)
    result["files"] = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file() and f.suffix != ".json")
    return result


def run(cfg) -> cache.Output:
    curated, evaluated, exported = data.run(cfg), evaluate.run(cfg), export.run(cfg)
    parts = cache.stage_parts(CODE, cfg.subset(*KEYS), data=curated, evaluate=evaluated, export=exported)

    def build(out: Path):
        movies, labels, y = data.load(curated)
        metrics = evaluate.load(evaluated)
        with np.load(evaluated / "probs.npz") as f:
            probs = {k: f[k] for k in f.files}
        with np.load(exported / "shipped_probs.npz") as f:
            shipped = {mode: f[mode] for mode in MODES}
        spec = json.loads((exported / "manifest.json").read_text())
        text = spec.get("text_encoder", {})
        tokenizer = exported / text["tokenizer"] if text.get("tokenizer") else None
        window = int(text.get("max_len") or cfg.max_len)
        shrinks = thresholds.parse_shrinks(cfg.threshold_shrinks)
        result = analyse(movies, labels, y, shipped, probs, metrics, tokenizer, window, out, cfg.seed, shrinks)
        (out / "errors.json").write_text(json.dumps(result, indent=1))

    return cache.cached(cfg, "errors", parts, build)


def load(out: cache.Output) -> dict:
    return json.loads((out / "errors.json").read_text())
