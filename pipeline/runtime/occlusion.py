"""Which sentences of a plot carry each genre: leave-one-sentence-out occlusion.

The plot is split by the manifest's sentence pattern (the demo splits it the same way, assets/js/explain.js,
and computes the same drops). Sentence i holds the plot's text tokens [n(i), n(i+1)), n(i) being the token
count (special tokens not counted) of the sentences before it joined, cut to max_chars as the plot is. The
plot without sentence i is its token ids without those (rules.windows_without): only the windows that held
them change and are re-run; every other window keeps the embedding computed for the whole plot. The windows
are pooled into probabilities as a prediction pools them, and a sentence's drop is the whole plot's
probability minus the probability without it, for every genre. A sentence of no tokens changes nothing: its
drop is exactly 0, without a run. A plot of one sentence has nothing to compare against: its drops are NaN.
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


def sentence_importance(
    predictor: GenrePredictor, plot: str, pixels: np.ndarray | None = None, batch: int = 1
) -> list[dict]:
    """[{"sentence": text, "drop": {genre: probability drop}}] for each sentence, in order.
    `batch`: windows per text-encoder call, where the manifest allows it (the result is the same)."""
    parts, rule = predictor.sentences(plot), predictor.rules["windows"]
    ids = predictor.token_ids(plot)
    changed = [rules.windows_without(ids, rule, a, b) for a, b in token_spans(predictor, parts)]
    scored = [i for i, c in enumerate(changed) if c] if len(parts) > 1 else []
    whole = predictor.embed_windows(rules.windows(ids, rule), batch)
    rerun = iter(predictor.embed_windows([w for i in scored for w in changed[i].values()], batch))
    texts = [whole]
    for i in scored:  # the whole plot's windows, those the sentence was in replaced
        text = whole.copy()
        for k in changed[i]:
            text[k] = next(rerun)
        texts.append(text)
    poster = None if pixels is None else predictor.embed_poster(pixels)  # the same for every occlusion
    image = (
        np.zeros((len(texts), predictor.image_dim), np.float32) if poster is None else np.repeat(poster, len(texts), 0)
    )
    probs = predictor.combine_windows(texts, image, np.full(len(texts), float(poster is not None)), batch)
    drops = np.full((len(parts), len(predictor.labels)), np.nan if len(parts) == 1 else 0.0, np.float32)
    drops[scored] = probs[0] - probs[1:]
    return [{"sentence": s, "drop": dict(zip(predictor.labels, d.tolist()))} for s, d in zip(parts, drops)]
