"""Grad-CAM on the poster model: one map per genre, and different genres look at different things."""

import random

import numpy as np
import pytest

from pipeline.learn import gradcam, poster_encoder
from pipeline.runtime import image_io
from pipeline.stages import train
from tests.tiny_data import poster


@pytest.fixture(scope="module")
def model(tiny):
    folder = tiny.stage("train")
    from pipeline.cache import Output

    head = train.load(Output(folder, folder.name), "poster_head")
    return gradcam.PosterClassifier(poster_encoder.PosterEncoder(224), head).eval()


@pytest.mark.parametrize("size", [(185, 278), (300, 450)])
def test_heatmaps_differ_between_genres(model, tmp_path, size):
    poster(tmp_path / "p.jpg", random.Random(size[0]), ["Horror", "Romance"], size=size)
    pixels = image_io.load_image(tmp_path / "p.jpg")
    maps = gradcam.heatmaps(model, pixels, [0, 1, 2])
    assert maps.shape == (3, size[1], size[0])
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert np.abs(maps[0] - maps[1]).mean() > 1e-3
    assert np.abs(maps[1] - maps[2]).mean() > 1e-3
