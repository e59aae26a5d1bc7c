"""Stage `explain`: Grad-CAM (pytorch-grad-cam) on the poster model for a gallery of test posters.

The poster model is EfficientNet-Lite0 followed by the poster-only head; for each poster we draw
one heatmap per top predicted genre over Lite0's final feature maps (after BN + ReLU6, the ones
pooled into the embedding: the layer the browser's Grad-CAM uses), beside the original.
"""

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import cache, data, fusion, image

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__)


class PosterClassifier(nn.Module):
    """Pixels (RGB 0..255, any size) → genre logits, for Grad-CAM's gradients."""

    def __init__(self, encoder: image.PosterEncoder, head: fusion.FusionHead):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        emb = self.encoder(pixels)
        n = len(emb)
        return self.head.logits(emb.new_zeros(n, 0), emb, emb.new_ones(n, 1))


def heatmaps(model: PosterClassifier, pixels: np.ndarray, genres: list[int]) -> np.ndarray:
    """One Grad-CAM map per genre index, [len(genres), H, W] in 0..1 at the poster's size."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = image.to_tensor(pixels)
    with GradCAM(model=model, target_layers=[model.encoder.features]) as cam:
        return np.stack([cam(input_tensor=x, targets=[ClassifierOutputTarget(g)])[0] for g in genres])


def overlay(pixels: np.ndarray, cam: np.ndarray) -> np.ndarray:
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(pixels.astype(np.float32) / 255, cam, use_rgb=True, image_weight=0.55)


def gallery_rows(movies, y, n: int, seed: int) -> list[int]:
    """Test movies with a poster and at least two genres, drawn with a seed."""
    ok = np.flatnonzero((movies.split.to_numpy() == "test") & (movies.poster != "").to_numpy() & (y.sum(1) >= 2))
    return sorted(np.random.default_rng(seed).choice(ok, size=min(n, len(ok)), replace=False).tolist())


def run(cfg) -> cache.Output:
    curated, trained = data.run(cfg), fusion.run(cfg)
    parts = {"train": trained.key, "config": cfg.subset("seed", "gradcam_posters", "image_size"), "code": CODE}

    def build(out: Path):
        from PIL import Image

        movies, labels, y = data.load(curated)
        model = PosterClassifier(image.PosterEncoder(cfg.image_size), fusion.load(trained, "poster_head")).eval()
        gallery = []
        for row in gallery_rows(movies, y, cfg.gradcam_posters, cfg.seed):
            pixels = image.load_image(movies.poster[row])
            with torch.no_grad():
                probs = torch.sigmoid(model(image.to_tensor(pixels)))[0].numpy()
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
