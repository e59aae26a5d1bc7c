"""Stage `select`: which extra rows train the text encoder and every peer, chosen by cross-validation.

The probe is a logistic regression on the frozen plot embedding (C fixed: PROBE_C), trained on the
extra rows of a candidate set plus the dev rows outside a fold, scored on that fold (held-out mean of
micro and macro average precision, no thresholds). First the languages (English only or all), then each
`source` is dropped when the probe does better without it. The choice is made on all dev folds and
again without each fold k (CV over the others): when every one of those agrees, no fold's labels
decided anything about the rows that predict it. When they disagree the rule fixed in advance,
FALLBACK, is used instead. Test rows are never read.
"""

import json
from pathlib import Path

import numpy as np

from . import cache, data, embed, logreg

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, logreg.__file__)

PROBE_C = 0.1
FALLBACK = {"languages": "en", "drop_sources": []}


def candidate_rows(extra, languages: str, drop: list[str]) -> np.ndarray:
    keep = extra.source.isin(sorted(set(extra.source) - set(drop)))
    if languages == "en":
        keep &= extra.original_language == "en"
    return np.flatnonzero(keep.to_numpy())


def probe_score(x_dev, y_dev, fold_dev, x_extra, y_extra, rows, folds: list[int]) -> float:
    """CV over `folds` of the dev rows: train on extra[rows] + the other folds, score the held one."""
    x = np.vstack([x_dev, x_extra[rows]])
    y = np.vstack([y_dev, y_extra[rows]])
    fold = np.concatenate([np.where(np.isin(fold_dev, folds), fold_dev, -3), np.full(len(rows), logreg.EXTRA)])
    return logreg.Fits(x, y, fold, scale=True).cv(PROBE_C, frozenset(folds))


def choose(score, extra, sources: list[str]) -> tuple[dict, dict]:
    """Languages first, then each source dropped if the probe gains without it; `score(rows)` → CV score."""
    scores = {}
    for lang in ("en", "all"):
        scores[f"languages={lang}"] = score(candidate_rows(extra, lang, []))
    languages = max(("en", "all"), key=lambda lang: scores[f"languages={lang}"])
    base = scores[f"languages={languages}"]
    drop = []
    for s in sources:
        rows = candidate_rows(extra, languages, [s])
        if not len(rows):
            continue
        scores[f"without {s}"] = score(rows)
        if scores[f"without {s}"] > base:
            drop.append(s)
    return {"languages": languages, "drop_sources": drop}, scores


def given(cfg, sources) -> dict | None:
    """The rows config.toml names, when it does not say "auto"."""
    if cfg.extra_languages == "auto" and cfg.extra_sources == "auto":
        return None
    languages = "en" if cfg.extra_languages in ("auto", "en") else "all"
    keep = sources if cfg.extra_sources == "auto" else [s.strip() for s in cfg.extra_sources.split(",")]
    return {"languages": languages, "drop_sources": sorted(set(sources) - set(keep))}


def run(cfg) -> cache.Output:
    curated, embedded = data.run(cfg), embed.run(cfg)
    parts = {
        "data": curated.key,
        "plots": embedded.plots.key,
        "config": cfg.subset("extra_languages", "extra_sources"),
        "code": CODE,
    }

    def build(out: Path):
        movies, _, y = data.load(curated)
        extra, y_extra = data.load_extra(curated)
        fold = movies.fold.to_numpy()
        dev = fold >= 0
        x_dev, y_dev, fold_dev = embedded.plots_array()[dev], y[dev], fold[dev]
        x_extra = embedded.extra_plots_array()
        sources = sorted(set(extra.source))
        record = {"probe": f"frozen plot embedding + logistic regression, C={PROBE_C}"}
        fixed = given(cfg, sources)
        if fixed is not None or not len(extra):
            choice = fixed or FALLBACK
            record["rule"] = "config.toml" if fixed else "no extra rows"
        else:
            folds = sorted(int(k) for k in np.unique(fold_dev))

            def scorer(within):
                return lambda rows: probe_score(x_dev, y_dev, fold_dev, x_extra, y_extra, rows, within)

            choice, record["cv"] = choose(scorer(folds), extra, sources)
            record["without_fold"] = {}
            for k in folds:
                inner = [f for f in folds if f != k]
                record["without_fold"][str(k)] = choose(scorer(inner), extra, sources)[0] if len(inner) > 1 else choice
            record["stable"] = all(c == choice for c in record["without_fold"].values())
            record["chosen_by_cv"] = choice
            if not record["stable"]:
                choice = FALLBACK
            record["rule"] = "cross-validation" if record["stable"] else "fallback (the CV choice moved with the folds)"
        rows = candidate_rows(extra, choice["languages"], choice["drop_sources"]) if len(extra) else np.zeros(0, int)
        record.update(choice)
        record["rows"] = int(len(rows))
        record["sources"] = {s: int((extra.source.iloc[rows] == s).sum()) for s in sources}
        np.save(out / "rows.npy", rows)
        (out / "selected.json").write_text(json.dumps(record, indent=1))

    return cache.cached(cfg, "select", parts, build)


def load(out: cache.Output) -> np.ndarray:
    """Indices (into data.load_extra's rows) of the extra rows every model trains on."""
    return np.load(out / "rows.npy")
