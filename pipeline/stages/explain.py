"""Stage `explain`: Grad-CAM (pytorch-grad-cam) on the poster model for a gallery of test posters.

The poster model is EfficientNet-Lite0 followed by the poster-only head; for each poster we draw
one heatmap per top predicted genre over Lite0's final feature maps (after BN + ReLU6, the ones
pooled into the embedding: the layer the browser's Grad-CAM uses), beside the original.
"""

import json
from pathlib import Path

import numpy as np
import torch

from pipeline import cache
from pipeline.learn import gradcam, poster_encoder
from pipeline.learn.gradcam import PosterClassifier, heatmaps, overlay
from pipeline.runtime import image_io
from pipeline.stages import data, train

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, gradcam.__file__)


def gallery_rows(movies, y, n: int, seed: int) -> list[int]:
    """Test movies with a poster and at least two genres, drawn with a seed."""
    ok = np.flatnonzero((movies.split.to_numpy() == "test") & (movies.poster != "").to_numpy() & (y.sum(1) >= 2))
    return sorted(np.random.default_rng(seed).choice(ok, size=min(n, len(ok)), replace=False).tolist())


def run(cfg) -> cache.Output:
    curated, trained = data.run(cfg), train.run(cfg)
    parts = {"train": trained.key, "config": cfg.subset("seed", "gradcam_posters", "image_size"), "code": CODE}

    def build(out: Path):
        from PIL import Image

        movies, labels, y = data.load(curated)
        model = PosterClassifier(
            poster_encoder.PosterEncoder(cfg.image_size), train.load(trained, "poster_head")
        ).eval()
        gallery = []
        for row in gallery_rows(movies, y, cfg.gradcam_posters, cfg.seed):
            pixels = image_io.load_image(movies.poster[row])
            with torch.no_grad():
                probs = torch.sigmoid(model(poster_encoder.to_tensor(pixels)))[0].numpy()
            top = [int(i) for i in np.argsort(-probs)[:2]]
            maps = heatmaps(model, pixels, top)
            tid = int(movies.tmdb_id[row])
            Image.fromarray(pixels).save(out / f"{tid}.jpg", quality=85)
            for g, m in zip(top, maps):
                Image.fromarray(overlay(pixels, m)).save(out / f"{tid}_{labels[g].replace(' ', '_')}.jpg", quality=85)
            gallery.append(
                {
                    "tmdb_id": tid,
                    "title": movies.title[row],
                    "genres": movies.genres[row].split("|"),
                    "predicted": [
                        {
                            "genre": labels[g],
                            "probability": float(probs[g]),
                            "file": f"{tid}_{labels[g].replace(' ', '_')}.jpg",
                        }
                        for g in top
                    ],
                    "map_difference": float(np.abs(maps[0] - maps[1]).mean()),
                }
            )
        (out / "gradcam.json").write_text(json.dumps(gallery, indent=1))

    return cache.cached(cfg, "explain", parts, build)
