"""The exported Grad-CAM graph (pipeline/poster_cam.py, run by the demo in the browser) against pytorch-grad-cam.

Tolerances, on maps scaled to 0..1 and resized to the poster as pytorch-grad-cam returns them:
  the CAM graph on the torch encoder's feature maps: 1e-4 (the same arithmetic, float32);
  the shipped path (fp16-stored poster encoder → features → CAM graph, both ONNX): 0.1
  (fp16 weight storage moves the features by ~0.1% and the 0..1 scaling magnifies it; measured ≤ 0.06).
"""

import random
from types import SimpleNamespace

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from pipeline import fusion, image, poster_cam
from tests.tiny_data import poster

POSTERS = [("Horror", (185, 278)), ("Romance", (300, 450)), ("Action", (640, 360))]
GENRES = [0, 3, 7]
TEXT_DIM, N_LABELS = 384, 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    out = tmp_path_factory.mktemp("cam")
    torch.manual_seed(0)
    encoder = image.PosterEncoder(224).eval()
    pixels = []
    for i, (genre, size) in enumerate(POSTERS):
        poster(out / f"p{i}.jpg", random.Random(i), [genre], size=size)
        pixels.append(image.load_image(out / f"p{i}.jpg"))
    head = fusion.FusionHead(TEXT_DIM, encoder.dim, N_LABELS, 32, 0.0)
    with torch.no_grad():
        embs = torch.cat([encoder(image.to_tensor(p)) for p in pixels])
        head.image_mean.copy_(embs.mean(0))
        head.image_std.copy_(embs.std(0) + 1e-3)
    head.eval()
    poster_entry = poster_cam.export_poster(SimpleNamespace(image_size=224), out)
    cam_entry = poster_cam.export_cam(head, out, TEXT_DIM, encoder.dim)
    text = torch.randn(1, TEXT_DIM)
    return SimpleNamespace(
        encoder=encoder,
        head=head,
        pixels=pixels,
        text=text,
        poster=ort.InferenceSession(str(out / poster_entry["file"])),
        cam=ort.InferenceSession(str(out / cam_entry["file"])),
        entries=(poster_entry, cam_entry),
        references={},
    )


class Classifier(torch.nn.Module):
    """Pixels → fusion logits for a fixed plot embedding: what the demo explains."""

    def __init__(self, encoder, head, text):
        super().__init__()
        self.encoder, self.head, self.text = encoder, head, text

    def forward(self, x):
        emb = self.encoder(x)
        return self.head.logits(self.text.expand(len(emb), -1), emb, emb.new_ones(len(emb), 1))


def reference(setup, pixels, genre):
    key = (id(pixels), genre)
    if key not in setup.references:
        setup.references[key] = gradcam(setup, pixels, genre)
    return setup.references[key]


def gradcam(setup, pixels, genre):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = Classifier(setup.encoder, setup.head, setup.text).eval()
    with GradCAM(model=model, target_layers=[setup.encoder.features]) as cam:
        return cam(input_tensor=image.to_tensor(pixels), targets=[ClassifierOutputTarget(genre)])[0]


def scaled(raw, shape):
    """pytorch-grad-cam's scaling: 0..1, resize to the image, 0..1 again (what the browser draws)."""
    m = raw - raw.min()
    m = cv2.resize(np.float32(m / (1e-7 + m.max())), (shape[1], shape[0]))
    m = m - m.min()
    return m / (1e-7 + m.max())


def test_manifest_entries(setup):
    poster_entry, cam_entry = setup.entries
    assert poster_entry["outputs"]["features"] == [1, setup.encoder.dim, 7, 7]
    assert poster_entry["preprocessing"]["max_pixels"] == image.MAX_PIXELS
    assert cam_entry["outputs"]["cam"] == [1, N_LABELS, "h", "w"]
    assert [i.name for i in setup.cam.get_inputs()] == ["features", "text"]


@pytest.mark.parametrize("which", range(len(POSTERS)))
@pytest.mark.parametrize("genre", GENRES)
def test_cam_graph_matches_pytorch_grad_cam(setup, which, genre):
    pixels = setup.pixels[which]
    expected = reference(setup, pixels, genre)
    with torch.no_grad():
        features = setup.encoder.feature_maps(image.to_tensor(pixels))
        graph = poster_cam.CamGraph(setup.head)(features, setup.text).numpy()[0, genre]
    onnx = setup.cam.run(None, {"features": features.numpy(), "text": setup.text.numpy()})[0][0, genre]
    assert expected.shape == pixels.shape[:2]
    assert np.abs(scaled(graph, pixels.shape) - expected).max() <= 1e-4
    assert np.abs(scaled(onnx, pixels.shape) - expected).max() <= 1e-4
    assert expected.max() > 0.99  # a real map, not all zeros


@pytest.mark.parametrize("which", range(len(POSTERS)))
def test_shipped_graphs_match_pytorch_grad_cam(setup, which):
    pixels = setup.pixels[which]
    x = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)
    emb, features = setup.poster.run(None, {"image": x})
    with torch.no_grad():
        torch_emb = setup.encoder(image.to_tensor(pixels)).numpy()
    np.testing.assert_allclose(features.mean(axis=(2, 3)), emb, atol=1e-5)
    assert np.abs(emb - torch_emb).max() <= 0.01 * np.abs(torch_emb).max()
    maps = setup.cam.run(None, {"features": features, "text": setup.text.numpy()})[0][0]
    worst = max(np.abs(scaled(maps[g], pixels.shape) - reference(setup, pixels, g)).max() for g in GENRES)
    print(f"shipped CAM vs pytorch-grad-cam: largest difference {worst:.4f}")
    assert worst <= 0.1


def test_different_genres_look_at_different_places(setup):
    with torch.no_grad():
        features = setup.encoder.feature_maps(image.to_tensor(setup.pixels[1]))
        maps = poster_cam.CamGraph(setup.head)(features, setup.text).numpy()[0]
    a, b = scaled(maps[GENRES[0]], (7, 7)), scaled(maps[GENRES[1]], (7, 7))
    assert np.abs(a - b).mean() > 1e-3


def test_fp32_export_is_the_fp16_export_without_rounding(setup, tmp_path):
    entry = poster_cam.export_poster(SimpleNamespace(image_size=224), tmp_path, fp16=False)
    assert entry["weights"] == "fp32"
    fp32 = ort.InferenceSession(str(tmp_path / entry["file"]))
    x = np.ascontiguousarray(setup.pixels[0].transpose(2, 0, 1)[None], dtype=np.float32)
    with torch.no_grad():
        expected = setup.encoder(image.to_tensor(setup.pixels[0])).numpy()
    got = fp32.run(None, {"image": x})[0]
    assert np.abs(got - expected).max() <= 1e-3 * np.abs(expected).max()
    assert (tmp_path / entry["file"]).stat().st_size > 10_000_000  # fp32 weights (the fp16-stored file is ~7 MB)
