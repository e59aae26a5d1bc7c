"""Stage `select`: which extra rows train the text encoder and every peer, chosen by cross-validation
on extra rows alone, so that no label of the main data (dev or test) decides anything here.

The validation rows are the extra rows of `extra_validation_source`, the snapshot whose labels agree
best with the main data's (tmdb_extra's README: 99.6 % the same genre set on shared movies), split into
VALIDATION_FOLDS folds. A candidate set of extra rows is scored by CV over those folds: a probe (logistic
regression on the frozen plot embedding, C fixed: PROBE_C) trains on the candidate rows outside the held
fold and scores the held fold (mean of micro and macro average precision, no thresholds). First the
languages (English only or all), then each other source is dropped when the probe does better without it.
Without the validation source in the data the rule fixed in advance, FALLBACK, is used.
"""

import json
from pathlib import Path

import numpy as np

from pipeline import cache
from pipeline.choose import extra_rows
from pipeline.choose.extra_rows import FALLBACK, candidate_rows, choose
from pipeline.learn import logreg
from pipeline.stages import data, embed

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, extra_rows.__file__, logreg.__file__)


PROBE_C = 0.1


VALIDATION_FOLDS = 3


def probe_score(x, y, rows: np.ndarray, fold: np.ndarray) -> float:
    """CV over the validation folds (fold >= 0): train on `rows` outside the held fold, score every
    validation row of the held fold (whether or not `rows` holds it: every candidate, the same rows)."""
    probs, truth = [], []
    for k in range(VALIDATION_FOLDS):
        train, held = rows[fold[rows] != k], np.flatnonzero(fold == k)
        probs.append(logreg.LogReg(PROBE_C).fit(x[train], y[train]).predict_proba(x[held]))
        truth.append(y[held])
    return logreg.held_out_ap(np.concatenate(truth), np.concatenate(probs))


def run(cfg) -> cache.Output:
    curated, embedded = data.run(cfg), embed.run(cfg)
    parts = {
        "data": curated.key,
        "plots": embedded.plots.key,
        "config": cfg.subset("extra_validation_source", "seed"),
        "code": CODE,
    }

    def build(out: Path):
        extra, y_extra = data.load_extra(curated)  # the main data's labels are never read here
        x_extra = embedded.extra_plots_array()
        sources = sorted(set(extra.source))
        validation = cfg.extra_validation_source
        record = {"probe": f"frozen plot embedding + logistic regression, C={PROBE_C}", "validation_source": validation}
        if validation in sources:
            is_val = (extra.source == validation).to_numpy()
            fold = np.full(len(extra), -1)
            fold[is_val] = np.random.default_rng(cfg.seed).permutation(is_val.sum()) % VALIDATION_FOLDS
            choice, record["cv"] = choose(
                lambda rows: probe_score(x_extra, y_extra, rows, fold), extra, sources, validation
            )
            record["rule"] = f"cross-validation over {VALIDATION_FOLDS} folds of the {validation} rows"
        else:
            choice, record["rule"] = FALLBACK, f"the fixed rule (no {validation!r} rows to validate on)"
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
