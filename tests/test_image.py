"""pipeline/runtime/image_io.py and the poster encoder's in-model resize (pipeline/learn/poster_encoder.py):
the one poster preprocessing definition (the browser's assets/js/poster.js follows it)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.learn import poster_encoder
from pipeline.runtime import image_io


def png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def test_transparent_pixels_are_composited_over_white():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (200, 100, 0, 0)  # fully transparent: white
    rgba[0, 1] = (200, 100, 0, 255)  # opaque: unchanged
    rgba[0, 2] = (200, 100, 0, 128)  # half: round(c*a/255) + 255 - a
    rgba[1] = (10, 20, 30, 1)
    got = image_io.load_image(png(Image.fromarray(rgba, "RGBA")))
    assert got[0, 0].tolist() == [255, 255, 255]
    assert got[0, 1].tolist() == [200, 100, 0]
    assert got[0, 2].tolist() == [round(200 * 128 / 255) + 127, round(100 * 128 / 255) + 127, 127]
    assert got[1, 0].tolist() == [254, 254, 254]


def test_palette_transparency_and_grey_alpha_are_composited():
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.putpixel((1, 1), 1)
    got = image_io.load_image(png(p, transparency=0))
    assert got[0, 0].tolist() == [255, 255, 255] and got[1, 1].tolist() == [255, 0, 0]
    la = Image.fromarray(np.dstack([np.full((2, 2), 50, np.uint8), np.zeros((2, 2), np.uint8)]), "LA")
    assert (image_io.load_image(png(la)) == 255).all()


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif, quality=95)
    got = image_io.load_image(buf.getvalue())
    assert got.shape == (40, 20, 3)
    assert got[5, 10, 2] > 200 and got[35, 10, 0] > 200  # blue on top after the rotation


def test_cmyk_jpeg_is_read_as_rgb():
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(buf, "JPEG", quality=95)
    got = image_io.load_image(buf.getvalue())
    assert got.shape == (16, 16, 3)
    assert got[8, 8, 0] > 200 and got[8, 8, 1] < 60 and got[8, 8, 2] < 60  # red


def test_block_mean_is_integer_exact():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    got = image_io.block_mean(x, 3)
    assert got.shape == (3, 2, 3)
    for i, j in [(0, 0), (2, 1), (1, 1)]:
        block = x[3 * i : 3 * i + 3, 3 * j : 3 * j + 3].astype(int)
        n = block.shape[0] * block.shape[1]
        assert (got[i, j] == (2 * block.sum((0, 1)) + n) // (2 * n)).all()


@pytest.mark.parametrize(
    "size,reduced", [((4000, 50), (1000, 13)), ((2048, 1024), (1024, 512)), ((1025, 10), (513, 5))]
)
def test_large_images_are_reduced_by_an_integer_factor(size, reduced):
    got = image_io.load_image(png(Image.new("RGB", size, (9, 99, 199))))
    assert got.shape == (reduced[1], reduced[0], 3)
    assert (got == (9, 99, 199)).all()


def test_tiny_image():
    got = image_io.load_image(png(Image.new("RGB", (1, 1), (1, 2, 3))))
    assert got.tolist() == [[[1, 2, 3]]]


def test_decompression_bomb_is_refused_before_decoding():
    side = int(image_io.MAX_PIXELS**0.5) + 100
    data = png(Image.new("1", (side, side)))  # a few kB that would decode to ~170 MB of RGBA
    assert len(data) < 200_000
    with pytest.raises(ValueError, match="megapixel limit"):
        image_io.load_image(data)


@pytest.mark.parametrize(
    "data,message",
    [(b"not an image", "not a readable image"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not a readable image")],
)
def test_unusable_bytes_raise_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        image_io.load_image(data)


def test_area_resize_is_a_box_filter():
    x = torch.arange(12, dtype=torch.float32).reshape(1, 1, 12, 1).expand(1, 1, 12, 2)
    out = poster_encoder.area_resize_rows(x, 4)
    assert torch.allclose(out[0, 0, :, 0], torch.tensor([1.0, 4.0, 7.0, 10.0]))  # means of 3-row blocks
    up = poster_encoder.area_resize_rows(torch.tensor([[[[0.0], [8.0]]]]), 4)
    assert torch.allclose(up[0, 0, :, 0], torch.tensor([0.0, 0.0, 8.0, 8.0]))
    odd = poster_encoder.area_resize_rows(torch.tensor([[[[0.0], [3.0], [6.0]]]]), 2)  # rows [0, 1.5) and [1.5, 3)
    assert torch.allclose(odd[0, 0, :, 0], torch.tensor([1.0, 5.0]))
