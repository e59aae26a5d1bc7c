"""The exported poster encoder, and the Grad-CAM of the visitor's own poster it makes possible in the browser.

poster_encoder.onnx  pixels → "embedding" [1, D] and "features" [1, D, h, w], the final feature maps
                     (after Lite0's head BN + ReLU6) that are mean-pooled into the embedding.
fusion_head.onnx     also outputs "image_jacobian" [N, G, D] = J below (fusion.FusionHead.image_jacobian),
                     so the browser needs no further graph: cam_g = relu(Σ_k J_gk / (h·w) · F_k).

Why that layer: the embedding is the spatial mean of F, so ∂emb_k/∂F_k,xy = 1/(h·w) everywhere; the
Grad-CAM weight of channel k for genre g (the spatial mean of ∂logit_g/∂F_k,xy) is then exactly
J_gk / (h·w) with J = ∂logit/∂emb, and no BN or ReLU6 derivative enters. (On _conv_head's output, before
BN + ReLU6, the weight would also carry the BN scale and the share of positions inside ReLU6's linear range.)

J for the fusion head (pipeline/learn/fusion.py: logits = z + mlp([z, t, (emb − mean)/std · p, p]), p = has_poster
= 1, t the standardised text embedding, mlp = Dropout, Linear W1 b1, GELU, Dropout, Linear W2 b2; z and t
do not depend on the poster; o = head.image_offset, where the poster's columns start):
    a = W1 [z, t, (emb − mean)/std, 1] + b1
    J = (W2 · diag(gelu'(a))) · W1[:, o:o+D] / std            [G, D]
    gelu'(a) = Φ(a) + a·φ(a)   (exact GELU; the tanh approximation's derivative when the head uses it)
    cam_g = relu(Σ_k J_gk / (h·w) · F_k)
pytorch-grad-cam computes the same map by autograd (tests/test_poster_cam.py compares them), then
scales each map to 0..1 and resizes it to the poster; the browser does that scaling when drawing.
"""

from pathlib import Path

import torch
from torch import nn

from pipeline.export import quantize
from pipeline.learn import poster_encoder
from pipeline.runtime import image_io


class PosterGraph(nn.Module):
    """The exported poster encoder: pixels → (embedding, features)."""

    def __init__(self, encoder: poster_encoder.PosterEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, pixels):
        f = self.encoder.feature_maps(pixels)
        return f.mean(dim=(2, 3)), f


def preprocessing(cfg) -> dict:
    """The poster preprocessing definition (pipeline/runtime/image_io.py's docstring), for the manifest and
    assets/js/poster.js."""
    return {
        "pixels": "decoded RGB uint8 as float 0..255, channels first; EXIF orientation applied; no colour-profile conversion",
        "alpha": "composited over white in integers: round(c*a/255) + 255 - a",
        "max_bytes": image_io.MAX_BYTES,
        "max_pixels": image_io.MAX_PIXELS,
        "max_side": image_io.MAX_SIDE,
        "reduce": "k = ceil(max(height, width) / max_side); if k > 1 each k×k block (edge blocks: their pixels) "
        "becomes its mean rounded half up, (2*sum + n) // (2*n)",
        "resize_in_model": [cfg.image_size, cfg.image_size],
        "resize": "area (box filter) average, inside the model",
        "normalisation": {"mean": poster_encoder.MEAN, "std": poster_encoder.STD},
    }


def export_poster(cfg, out_dir: Path, fp16: bool = True) -> dict:
    """Write poster_encoder.onnx (outputs "embedding", then "features") and return its manifest entry.
    fp16=False keeps fp32 weights (what quantize.quantize_poster takes)."""
    encoder = poster_encoder.PosterEncoder(cfg.image_size).eval()
    path = Path(out_dir) / "poster_encoder.onnx"
    dummy = torch.rand(1, 3, 278, 185) * 255
    with torch.no_grad():
        _, f = PosterGraph(encoder)(dummy)
    axes = {"image": {2: "height", 3: "width"}}
    quantize.export_onnx(PosterGraph(encoder), (dummy,), path, ["image"], ["embedding", "features"], axes)
    if fp16:
        quantize.store_weights_fp16(path)
    return {
        "file": path.name,
        "inputs": {"image": [1, 3, "height", "width"]},
        "input_type": "float32",
        "output": "embedding",
        "outputs": {"embedding": [1, encoder.dim], "features": list(f.shape)},
        "dim": encoder.dim,
        "preprocessing": preprocessing(cfg),
        "weights": "fp16 storage, fp32 compute" if fp16 else "fp32",
    }


def gradcam_entry(head_file: str, poster_file: str, n_labels: int, image_dim: int) -> dict:
    """The manifest's description of the in-browser Grad-CAM (the graphs above, no graph of its own)."""
    return {
        "jacobian": {"file": head_file, "output": "image_jacobian", "shape": ["batch", n_labels, image_dim]},
        "features": {"file": poster_file, "output": "features", "shape": [1, image_dim, "h", "w"]},
        "layer": "the poster encoder's final feature maps (after BN + ReLU6), mean-pooled into the embedding",
        "method": "Grad-CAM of each genre's fusion logit (plot + poster): cam_g = relu(sum_k J[g, k] / (h*w) * F[k]); "
        "scale each map to 0..1 and stretch it over the whole poster to draw it",
    }
