"""Stage `embed`: frozen plot and poster embeddings for every curated movie, cached."""

from pathlib import Path

import numpy as np

from . import cache, data, image, text


def run(cfg) -> cache.Output:
    curated = data.run(cfg)
    parts = {
        "data": curated.key,
        "config": cfg.subset("text_backbone", "max_len", "image_size"),
        "code": cache.source_digest(__file__, text.__file__, image.__file__),
    }

    def build(out: Path):
        movies, _, _ = data.load(curated)
        np.save(out / "text.npy", text.embed(movies.overview.tolist(), cfg.text_backbone, cfg.max_len, cfg.text_batch))
        np.save(out / "image.npy", image.embed(movies.poster.tolist(), cfg.image_size, cfg.image_batch))

    return cache.cached(cfg, "embed", parts, build)


def load(out: cache.Output) -> tuple[np.ndarray, np.ndarray]:
    return np.load(out / "text.npy"), np.load(out / "image.npy")
