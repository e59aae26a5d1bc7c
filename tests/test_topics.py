"""pipeline/stages/topics.py: the neighbours handed to UMAP are the ones UMAP finds itself on small data."""

import numpy as np
from sklearn.metrics import pairwise_distances
from umap.distances import cosine

from pipeline.stages import topics


def test_cosine_neighbours_are_umaps_own_exact_ones():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 16)).astype(np.float32)
    idx, dist = topics.cosine_neighbours(x, k=15)
    # what UMAP computes itself under 4,096 rows: its numba cosine for every pair, each row's 15 smallest
    ref = pairwise_distances(x, metric=cosine)
    ref_idx = np.argsort(ref, axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(idx, ref_idx)
    # scikit-learn's float32 product against numba's sum: distances up to 2 agree to a few float32 ulps (2.4e-7 each)
    np.testing.assert_allclose(dist, np.take_along_axis(ref, ref_idx, axis=1), atol=1e-6)
    assert (idx[:, 0] == np.arange(len(x))).all() and idx.dtype == np.int32 and dist.dtype == np.float32
