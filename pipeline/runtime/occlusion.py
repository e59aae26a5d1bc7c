"""Which sentences of a plot carry each genre: leave-one-sentence-out occlusion.

The plot is split by the manifest's sentence pattern (the demo splits it the same way, assets/js/explain.js,
and computes the same drops). Sentence i holds the plot's text tokens [n(i), n(i+1)), n(i) being the token
count (special tokens not counted) of the sentences before it joined, cut to max_chars as the plot is. The
plot without sentence i is its token ids without those (rules.windows_without): only the windows that held
them change and are re-run; every other window keeps the embedding computed for the whole plot. The windows
are pooled into probabilities as a prediction pools them, the bag of words of the plot without it (its
other sentences joined) is blended in, and a sentence's drop is the whole plot's probability minus the
probability without it, for every genre. A sentence of no tokens changes nothing: its
drop is exactly 0, without a run. A plot of one sentence has nothing to compare against: its drops are NaN.

A long plot would re-run too many windows to leave every sentence out alone in the demo's time (a 700-word
plot: ~40 window runs): past the manifest's rules.explanation.max_tokens, consecutive sentences are left
out together (rules.passages) and each sentence of a passage gets the passage's drop. Sentences past
max_chars are never read: their drop is exactly 0. (The bag of words cuts the plot without a passage at
max_chars again, so past a 20,000-character paste it reads a little further than the windows do.)
"""

import numpy as np

from pipeline.runtime import rules
from pipeline.runtime.predictor import GenrePredictor


def token_spans(predictor: GenrePredictor, parts: list[str]) -> list[tuple[int, int]]:
    """Each sentence's text tokens [start, end) among the plot's: the token counts of the text before it
    and through it, both cut to max_chars (past the cut, a sentence's span is empty)."""
    cut = predictor.rules["windows"]["max_chars"]
    ends, prefix = [0], ""
    for part in parts:
        prefix += part
        # once the prefix reaches the cut, every later count is the same: no need to tokenize again
        ends.append(ends[-1] if len(prefix) - len(part) >= cut else predictor.text_tokens(prefix[:cut]))
    return list(zip(ends, ends[1:]))


def passage_plan(predictor: GenrePredictor, parts: list[str], n_ids: int) -> tuple[list[int], list[tuple[int, int]]]:
    """The token boundaries n(0..read) of the sentences read (those starting before max_chars) and the
    passages rules.passages makes of them, for a plot of n_ids token ids."""
    rule = predictor.rules["windows"]
    before = np.cumsum([0] + [len(part) for part in parts])[:-1]  # code points before each sentence
    read = int((before < rule["max_chars"]).sum())  # the sentences after these start past the cut: never read
    ends = [0] + [b for _, b in token_spans(predictor, parts)[:read]]
    return ends, rules.passages(ends, n_ids, rule, predictor.rules["explanation"]["max_tokens"])


def sentence_importance(
    predictor: GenrePredictor, plot: str, pixels: np.ndarray | None = None, batch: int = 1
) -> list[dict]:
    """[{"sentence": text, "drop": {genre: probability drop}, "passage": its passage's index}] for each
    sentence, in order (a sentence past max_chars is in no passage: None).
    `batch`: windows per text-encoder call, where the manifest allows it (the result is the same)."""
    parts, rule = predictor.sentences(plot), predictor.rules["windows"]
    ids = predictor.token_ids(plot)
    ends, groups = passage_plan(predictor, parts, len(ids)) if len(parts) > 1 else ([0], [])
    changed = [rules.windows_without(ids, rule, ends[i], ends[j]) for i, j in groups]
    scored = [g for g, c in enumerate(changed) if c]
    whole = predictor.embed_windows(rules.windows(ids, rule), batch)
    rerun = iter(predictor.embed_windows([w for g in scored for w in changed[g].values()], batch))
    texts = [whole]
    for g in scored:  # the whole plot's windows, those the passage was in replaced
        text = whole.copy()
        for k in changed[g]:
            text[k] = next(rerun)
        texts.append(text)
    poster = None if pixels is None else predictor.embed_poster(pixels)  # the same for every occlusion
    image = (
        np.zeros((len(texts), predictor.image_dim), np.float32) if poster is None else np.repeat(poster, len(texts), 0)
    )
    # each passage left out of the text, for the bag of words (the windows left it out of their token ids)
    plots = [plot] + ["".join(parts[: groups[g][0]] + parts[groups[g][1] :]) for g in scored]
    probs = predictor.combine_windows(texts, image, np.full(len(texts), float(poster is not None)), batch, plots=plots)
    by_group = np.zeros((len(groups), len(predictor.labels)), np.float32)
    by_group[scored] = probs[0] - probs[1:]
    drops = np.full((len(parts), len(predictor.labels)), np.nan if len(parts) == 1 else 0.0, np.float32)
    passage = [None] * len(parts)
    for g, (i, j) in enumerate(groups):
        drops[i:j] = by_group[g]
        passage[i:j] = [g] * (j - i)
    return [
        {"sentence": s, "drop": dict(zip(predictor.labels, d.tolist())), "passage": k}
        for s, d, k in zip(parts, drops, passage)
    ]
