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
from PIL import Image, ImageOps

MAX_SIDE = 1024  # larger images are reduced by an integer block mean first (poster.js does the same)


MAX_BYTES = 20 * 1024 * 1024  # larger files are rejected


MAX_PIXELS = 40_000_000  # width × height over this is refused before decoding (about 160 MB as RGBA)


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
