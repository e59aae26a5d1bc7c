"""pipeline/logreg.py: the peers' logistic regression is scikit-learn's, and its C is chosen inside each fold."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from pipeline.learn import logreg


@pytest.mark.parametrize("c", [0.01, 1.0])
@pytest.mark.parametrize("sparse", [False, True])
def test_same_objective_as_scikit_learn(c, sparse):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    y = ((x[:, :3] @ rng.normal(size=(3, 3)) + rng.normal(size=(300, 3))) > 0).astype(np.float32)
    x_in = sp.csr_matrix(np.abs(x)) if sparse else x
    ours = logreg.LogReg(c, scale=False).fit(x_in, y).predict_proba(x_in)
    for g in range(y.shape[1]):
        ref = LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x_in, y[:, g]).predict_proba(x_in)[:, 1]
        # both minimise the same convex objective to convergence: only the solvers' tolerances differ
        np.testing.assert_allclose(ours[:, g], ref, atol=1e-3)


def test_nested_choice_picks_the_c_that_cross_validates_best():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(240, 20)).astype(np.float32)
    y = ((x[:, :2].sum(1, keepdims=True) + rng.normal(size=(240, 2))) > 0).astype(np.float32)
    fold = np.arange(240) % 3
    fold[:30] = -1
    probs, info = logreg.nested_probs(x, y, fold, [1e-4, 1.0])
    # with 20 features and a 2-feature signal, C = 1e-4 shrinks everything to the base rate: CV never picks it
    assert set(info["c_by_fold"].values()) == {1.0}
    assert np.isfinite(probs).all()
