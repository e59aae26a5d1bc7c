"""Which sentences of a plot carry each genre: leave-one-sentence-out occlusion.

The plot is split by the manifest's sentence pattern (the demo splits it the same way); each
sentence's drop is the full plot's probability minus the probability of the plot without it, for
every genre. A plot of one sentence has nothing to compare against: its drops are NaN.
"""

import numpy as np

from pipeline.runtime.predictor import GenrePredictor


def sentence_importance(
    predictor: GenrePredictor, plot: str, pixels: np.ndarray | None = None, batch: int = 1
) -> list[dict]:
    """[{"sentence": text, "drop": {genre: probability drop}}] for each sentence, in order.
    `batch`: plots per text-encoder call, where the manifest allows it (the result is the same)."""
    parts = predictor.sentences(plot)
    rests = ["".join(parts[:i] + parts[i + 1 :]).strip() for i in range(len(parts))] if len(parts) > 1 else []
    scored = [i for i, rest in enumerate(rests) if rest]
    text = predictor.embed_plots([plot] + [rests[i] for i in scored], batch)
    poster = None if pixels is None else predictor.embed_poster(pixels)  # the same for every occlusion
    image = (
        np.zeros((len(text), predictor.image_dim), np.float32) if poster is None else np.repeat(poster, len(text), 0)
    )
    probs = predictor.combine_many(text, image, np.full(len(text), float(poster is not None)), batch)
    drops = np.full((len(parts), len(predictor.labels)), np.nan, np.float32)
    drops[scored] = probs[0] - probs[1:]
    return [{"sentence": s, "drop": dict(zip(predictor.labels, d.tolist()))} for s, d in zip(parts, drops)]
