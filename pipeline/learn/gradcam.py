"""Grad-CAM of the poster-only model: the poster encoder and its head as one classifier, heatmaps of its
final feature maps, and the overlay the gallery shows."""

import numpy as np
import torch
from torch import nn

from pipeline.learn import fusion, poster_encoder


class PosterClassifier(nn.Module):
    """Pixels (RGB 0..255, any size) → genre logits, for Grad-CAM's gradients."""

    def __init__(self, encoder: poster_encoder.PosterEncoder, head: fusion.FusionHead):
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

    x = poster_encoder.to_tensor(pixels)
    with GradCAM(model=model, target_layers=[model.encoder.features]) as cam:
        return np.stack([cam(input_tensor=x, targets=[ClassifierOutputTarget(g)])[0] for g in genres])


def overlay(pixels: np.ndarray, cam: np.ndarray) -> np.ndarray:
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(pixels.astype(np.float32) / 255, cam, use_rgb=True, image_weight=0.55)
