"""Grad-CAM of the visitor's own poster, computed in the browser from two exported outputs: the poster
encoder's "features" F and the fusion head's "image_jacobian" J (fusion.FusionHead.image_jacobian),
cam_g = relu(sum_k J_gk / (h*w) * F_k), against pytorch-grad-cam and autograd.

Tolerances (maps scaled to 0..1 and resized to the poster as pytorch-grad-cam returns them):
  J against autograd, and the exported head's J against torch's: float32 either side, the same sums in
  another order: ~1e-7 relative; bound 1e-5 relative to J's scale (100x margin).
  CAM from the torch features and J against pytorch-grad-cam: the same arithmetic in float32, then the
  0..1 scaling divides by the map's range, which can magnify ~1e-7 relative rounding ~100x: 1e-4.
  The shipped path (fp16-stored poster encoder -> features, exported head -> J, both ONNX): fp16 weight
  storage moves the features by ~1e-3 relative (test_parity: embedding within 1 % of its scale, cosine
  0.9999); the 0..1 scaling of a map whose range is a tenth of its values magnifies that 10x and more at
  flat maps: 0.1 admits a 100x magnification of the 1e-3 feature error.
"""

import random
from types import SimpleNamespace

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from pipeline.export import packing, poster_cam
from pipeline.learn import fusion, poster_encoder
from pipeline.runtime import image_io
from pipeline.stages import export
from tests.tiny_data import poster

POSTERS = [("Horror", (185, 278)), ("Romance", (300, 450)), ("Action", (640, 360))]
GENRES = [0, 3, 7]
TEXT_DIM, N_LABELS = 384, 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    out = tmp_path_factory.mktemp("cam")
    torch.manual_seed(0)
    encoder = poster_encoder.PosterEncoder(224).eval()
    pixels = []
    for i, (genre, size) in enumerate(POSTERS):
        poster(out / f"p{i}.jpg", random.Random(i), [genre], size=size)
        pixels.append(image_io.load_image(out / f"p{i}.jpg"))
    head = fusion.FusionHead(TEXT_DIM, encoder.dim, N_LABELS, 32, 0.0)
    with torch.no_grad():
        embs = torch.cat([encoder(poster_encoder.to_tensor(p)) for p in pixels])
        head.image_mean.copy_(embs.mean(0))
        head.image_std.copy_(embs.std(0) + 1e-3)
    head.eval()
    shipped = fusion.ShippedHead(fusion.text_only(head.text_head, encoder.dim), head).eval()
    poster_entry = poster_cam.export_poster(SimpleNamespace(image_size=224), out)
    export.export_head(shipped, out, TEXT_DIM, encoder.dim)
    text = torch.randn(1, TEXT_DIM)
    return SimpleNamespace(
        encoder=encoder,
        head=head,
        shipped=shipped,
        pixels=pixels,
        text=text,
        poster=ort.InferenceSession(str(out / poster_entry["file"])),
        fusion=ort.InferenceSession(packing.model_source(out / "fusion_head.onnx")),
        entries=(
            poster_entry,
            poster_cam.gradcam_entry("fusion_head.onnx", poster_entry["file"], N_LABELS, encoder.dim),
        ),
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
        return cam(input_tensor=poster_encoder.to_tensor(pixels), targets=[ClassifierOutputTarget(genre)])[0]


def cam_maps(jacobian: np.ndarray, features: np.ndarray) -> np.ndarray:
    """What the browser computes: [G, h, w] from J [G, D] and F [D, h, w]."""
    d, h, w = features.shape
    return np.maximum(0, (jacobian / (h * w)) @ features.reshape(d, -1)).reshape(-1, h, w)


def scaled(raw, shape):
    """pytorch-grad-cam's scaling: 0..1, resize to the image, 0..1 again (what the browser draws)."""
    m = raw - raw.min()
    m = cv2.resize(np.float32(m / (1e-7 + m.max())), (shape[1], shape[0]))
    m = m - m.min()
    return m / (1e-7 + m.max())


def test_manifest_entries(setup):
    poster_entry, gradcam_entry = setup.entries
    assert poster_entry["outputs"]["features"] == [1, setup.encoder.dim, 7, 7]
    assert poster_entry["preprocessing"]["max_pixels"] == image_io.MAX_PIXELS
    assert gradcam_entry["jacobian"]["shape"] == ["batch", N_LABELS, setup.encoder.dim]
    assert [o.name for o in setup.fusion.get_outputs()] == ["probabilities", "image_jacobian"]
    assert [o.name for o in setup.poster.get_outputs()] == ["embedding", "features"]


def test_image_jacobian_is_the_autograd_jacobian(setup):
    with torch.no_grad():
        emb = setup.encoder(poster_encoder.to_tensor(setup.pixels[0]))
    auto = torch.autograd.functional.jacobian(lambda e: setup.head.logits(setup.text, e, torch.ones(1, 1))[0], emb)[
        :, 0
    ]  # [G, D]
    with torch.no_grad():
        mine = setup.head.image_jacobian(setup.text, emb)[0]
    assert np.abs((mine - auto).numpy()).max() <= 1e-5 * np.abs(auto.numpy()).max()
    assert not setup.shipped.plot_mode.image_jacobian(setup.text, emb).any()  # a plot-only head: zeros


def test_exported_head_outputs_are_the_torch_head(setup):
    rng = np.random.default_rng(0)
    text = rng.normal(size=(3, TEXT_DIM)).astype(np.float32)
    emb = rng.normal(size=(3, setup.encoder.dim)).astype(np.float32)
    for has in (0.0, 1.0):
        p = np.full((3, 1), has, np.float32)
        probs, jac = setup.fusion.run(None, {"text": text, "image": emb, "has_poster": p})
        with torch.no_grad():
            tp, tj = setup.shipped(*(torch.from_numpy(v) for v in (text, emb, p)))
        assert np.abs(probs - tp.numpy()).max() <= 1e-5  # probabilities in 0..1, float32 reordered
        assert np.abs(jac - tj.numpy()).max() <= 1e-5 * np.abs(tj.numpy()).max()


@pytest.mark.parametrize("which", range(len(POSTERS)))
@pytest.mark.parametrize("genre", GENRES)
def test_cam_from_the_jacobian_matches_pytorch_grad_cam(setup, which, genre):
    pixels = setup.pixels[which]
    expected = reference(setup, pixels, genre)
    with torch.no_grad():
        features = setup.encoder.feature_maps(poster_encoder.to_tensor(pixels))
        emb = features.mean(dim=(2, 3))
        jac = setup.head.image_jacobian(setup.text, emb)[0].numpy()
    onnx_jac = setup.fusion.run(
        None, {"text": setup.text.numpy(), "image": emb.numpy(), "has_poster": np.ones((1, 1), np.float32)}
    )[1][0]
    assert expected.shape == pixels.shape[:2]
    for j in (jac, onnx_jac):
        got = cam_maps(j, features.numpy()[0])[genre]
        assert np.abs(scaled(got, pixels.shape) - expected).max() <= 1e-4
    assert expected.max() > 0.99  # a real map, not all zeros


@pytest.mark.parametrize("which", range(len(POSTERS)))
def test_shipped_graphs_match_pytorch_grad_cam(setup, which):
    pixels = setup.pixels[which]
    x = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)
    emb, features = setup.poster.run(None, {"image": x})
    with torch.no_grad():
        torch_emb = setup.encoder(poster_encoder.to_tensor(pixels)).numpy()
    np.testing.assert_allclose(features.mean(axis=(2, 3)), emb, atol=1e-5)  # the embedding is F's mean
    assert np.abs(emb - torch_emb).max() <= 0.01 * np.abs(torch_emb).max()  # fp16 storage (docstring)
    jac = setup.fusion.run(None, {"text": setup.text.numpy(), "image": emb, "has_poster": np.ones((1, 1), np.float32)})[
        1
    ][0]
    maps = cam_maps(jac, features[0])
    worst = max(np.abs(scaled(maps[g], pixels.shape) - reference(setup, pixels, g)).max() for g in GENRES)
    print(f"shipped CAM vs pytorch-grad-cam: largest difference {worst:.4f}")
    assert worst <= 0.1


def test_different_genres_look_at_different_places(setup):
    with torch.no_grad():
        features = setup.encoder.feature_maps(poster_encoder.to_tensor(setup.pixels[1]))
        jac = setup.head.image_jacobian(setup.text, features.mean(dim=(2, 3)))[0].numpy()
    maps = cam_maps(jac, features.numpy()[0])
    a, b = scaled(maps[GENRES[0]], (7, 7)), scaled(maps[GENRES[1]], (7, 7))
    assert np.abs(a - b).mean() > 1e-3


def test_fp32_export_is_the_fp16_export_without_rounding(setup, tmp_path):
    entry = poster_cam.export_poster(SimpleNamespace(image_size=224), tmp_path, fp16=False)
    assert entry["weights"] == "fp32"
    fp32 = ort.InferenceSession(str(tmp_path / entry["file"]))
    x = np.ascontiguousarray(setup.pixels[0].transpose(2, 0, 1)[None], dtype=np.float32)
    with torch.no_grad():
        expected = setup.encoder(poster_encoder.to_tensor(setup.pixels[0])).numpy()
    got = fp32.run(None, {"image": x})[0]
    assert np.abs(got - expected).max() <= 1e-3 * np.abs(expected).max()  # fp32 either side, Lite0's depth
    assert (tmp_path / entry["file"]).stat().st_size > 10_000_000  # fp32 weights (the fp16-stored file is ~7 MB)
