"""Stage `embed`: plot and poster embeddings for every curated movie, each cached on its own.

Plots: the frozen backbone's, of the main rows and of the extra rows (for the peers, the choice of
extra rows and topics; the fine-tuned model's outputs come from `finetune` itself). Posters: the frozen poster encoder's. Neither depends on the fine-tuning, so
re-tuning the text model redoes neither, and neither sees a label: no out-of-fold care is needed.
"""

from pathlib import Path

import numpy as np

from pipeline import cache
from pipeline.learn import poster_encoder, text
from pipeline.runtime import image_io
from pipeline.stages import data

# digested at import, so a stage's key names the code that actually runs
PLOTS_CODE = cache.source_digest(__file__, text.__file__)
POSTERS_CODE = cache.source_digest(__file__, image_io.__file__, poster_encoder.__file__)


class Embeddings:
    def __init__(self, plots: cache.Output, posters: cache.Output):
        self.plots, self.posters = plots, posters
        self.key = cache.digest([plots.key, posters.key])

    def plots_array(self) -> np.ndarray:
        """Frozen plot embeddings, one row per curated movie."""
        return np.load(self.plots / "frozen.npy")

    def extra_plots_array(self) -> np.ndarray:
        """Frozen plot embeddings of the curated extra rows (data.load_extra's order)."""
        return np.load(self.plots / "extra_frozen.npy")

    def posters_array(self) -> np.ndarray:
        """Poster embeddings, one row per curated movie (zeros where there is no poster)."""
        return np.load(self.posters / "image.npy")


def run(cfg) -> Embeddings:
    curated = data.run(cfg)
    movies, _, _ = data.load(curated)
    settings = cfg.subset("text_backbone", "max_len")

    def build_plots(out: Path):
        extra, _ = data.load_extra(curated)
        plots = movies.overview.tolist() + extra.overview.tolist()
        frozen = text.embed(plots, cfg.text_backbone, cfg.max_len, cfg.text_batch)
        np.save(out / "frozen.npy", frozen[: len(movies)])
        np.save(out / "extra_frozen.npy", frozen[len(movies) :])

    def build_posters(out: Path):
        np.save(out / "image.npy", poster_encoder.embed(movies.poster.tolist(), cfg.image_size, cfg.image_batch))

    plots = cache.cached(
        cfg,
        "embed_plots",
        {"data": curated.key, "config": settings, "code": PLOTS_CODE},
        build_plots,
    )
    posters = cache.cached(
        cfg,
        "embed_posters",
        {"data": curated.key, "config": cfg.subset("image_size"), "code": POSTERS_CODE},
        build_posters,
    )
    return Embeddings(plots, posters)
