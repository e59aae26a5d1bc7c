"""Which extra rows train the encoder and the peers: languages first, then each source dropped when the
probe's CV score gains without it (pipeline/stages/select.py scores the candidates)."""

import numpy as np

FALLBACK = {"languages": "en", "drop_sources": []}


def candidate_rows(extra, languages: str, drop: list[str]) -> np.ndarray:
    keep = ~extra.source.isin(drop)
    if languages == "en":
        keep &= extra.original_language == "en"
    return np.flatnonzero(keep.to_numpy())


def choose(score, extra, sources: list[str], validation: str) -> tuple[dict, dict]:
    """Languages first, then each source dropped if the probe gains without it; `score(rows)` → CV score."""
    scores = {f"languages={lang}": score(candidate_rows(extra, lang, [])) for lang in ("en", "all")}
    languages = max(("en", "all"), key=lambda lang: scores[f"languages={lang}"])
    base = scores[f"languages={languages}"]
    drop = []
    for s in sources:
        if s == validation:
            continue
        scores[f"without {s}"] = score(candidate_rows(extra, languages, [s]))
        if scores[f"without {s}"] > base:
            drop.append(s)
    return {"languages": languages, "drop_sources": drop}, scores
