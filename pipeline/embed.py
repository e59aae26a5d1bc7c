"""Stage `embed`: plot and poster embeddings for every curated movie, each cached on its own.

Plots get two: the frozen backbone's (for the baseline) and the fine-tuned encoder's (for fusion).
Poster embeddings do not depend on the text model, so re-tuning it does not redo them.
"""

from pathlib import Path

import numpy as np

from . import cache, data, finetune, image, text

# digested at import, so a stage's key names the code that actually runs
PLOTS_CODE = cache.source_digest(__file__, text.__file__)
POSTERS_CODE = cache.source_digest(__file__, image.__file__)


class Embeddings:
    def __init__(self, plots: cache.Output, posters: cache.Output):
        self.plots, self.posters = plots, posters
        self.key = cache.digest([plots.key, posters.key])

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(frozen plot, fine-tuned plot, poster) embeddings, one row per curated movie."""
        return (
            np.load(self.plots / "frozen.npy"),
            np.load(self.plots / "tuned.npy"),
            np.load(self.posters / "image.npy"),
        )


def run(cfg) -> Embeddings:
    curated, tuned = data.run(cfg), finetune.run(cfg)
    movies, _, _ = data.load(curated)
    settings = cfg.subset("text_backbone", "max_len")

    def build_plots(out: Path):
        plots = movies.overview.tolist()
        np.save(out / "frozen.npy", text.embed(plots, cfg.text_backbone, cfg.max_len, cfg.text_batch))
        np.save(
            out / "tuned.npy",
            text.embed(plots, cfg.text_backbone, cfg.max_len, cfg.text_batch, tuned / "encoder.safetensors"),
        )

    def build_posters(out: Path):
        np.save(out / "image.npy", image.embed(movies.poster.tolist(), cfg.image_size, cfg.image_batch))

    plots = cache.cached(
        cfg,
        "embed_plots",
        {"data": curated.key, "finetune": tuned.key, "config": settings, "code": PLOTS_CODE},
        build_plots,
    )
    posters = cache.cached(
        cfg,
        "embed_posters",
        {"data": curated.key, "config": cfg.subset("image_size"), "code": POSTERS_CODE},
        build_posters,
    )
    return Embeddings(plots, posters)
