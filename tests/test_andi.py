"""Tests of minrep.andi, the optional andi-datasets backend.

The core of the comparison: minrep's exact FBM/BM/SBM and andi-datasets' (rescaled by the
wrapper to minrep's conventions) must be the same processes. Tolerances are 5 standard
deviations of each estimator under that hypothesis, derived from the sample size and the exact
Gaussian fourth moments (Isserlis); seeds are fixed.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

pytest.importorskip("andi_datasets")

import stochastic.random  # noqa: E402  (installed with andi-datasets)

import minrep.andi as andi  # noqa: E402
from minrep.datasets import make_dataset  # noqa: E402
from minrep.processes import SimulationError, simulate  # noqa: E402

N_SIGMA = 5.0
P_5SIGMA = 2 * scipy.stats.norm.sf(N_SIGMA)  # two-sided 5-sigma p-value


def fgn_cov(alpha: float, lags, D: float = 1.0) -> np.ndarray:
    k = np.abs(np.asarray(lags, dtype=np.float64))
    return D * (np.abs(k + 1) ** alpha - 2 * np.abs(k) ** alpha + np.abs(k - 1) ** alpha)


def lag_product_mean(x: np.ndarray, k: int) -> float:
    """Mean over all series and t of x_t x_{t+k} (the zero-mean estimator of lag-k cov)."""
    x = np.asarray(x, dtype=np.float64)
    m = x.shape[-1] - k
    return float(np.mean(x[..., :m] * x[..., k : k + m]))


def lag_product_std(gamma, k: int, n_steps: int, n_series: int) -> float:
    """Exact std of :func:`lag_product_mean` for independent stationary Gaussian series:
    Var = sum_{|d|<M} (M - |d|) [gamma(d)^2 + gamma(d+k) gamma(d-k)] / (M^2 n_series), with
    M = n_steps - k (Isserlis' theorem)."""
    m = n_steps - k
    d = np.arange(-(m - 1), m)
    terms = gamma(d) ** 2 + gamma(d + k) * gamma(d - k)
    return math.sqrt(float(np.sum((m - np.abs(d)) * terms)) / (m**2 * n_series))


def whiten(x: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Series (..., L) with covariance ``cov`` mapped to i.i.d. N(0, 1) values (flattened)."""
    lower = np.linalg.cholesky(cov)
    flat = np.asarray(x, dtype=np.float64).reshape(-1, cov.shape[0])
    return scipy.linalg.solve_triangular(lower, flat.T, lower=True).ravel()


# ---------------------------------------------------------------------------------------------
# 1. Same processes as minrep's exact simulators


@pytest.mark.parametrize(("process", "alpha"), [("fbm", 0.5), ("fbm", 1.5), ("bm", None)])
def test_fbm_and_bm_match_minrep(process, alpha):
    n, dim, n_steps = 1500, 2, 50
    rng = np.random.default_rng(3)
    D = 10 ** rng.uniform(-4, 1, n)  # per-trajectory D: the wrapper's rescaling must use it
    ours = simulate(process, alpha, D, n_steps, dim=dim, seed=4, dtype=np.float64)
    theirs = andi.simulate(process, alpha, D, n_steps, dim=dim, seed=5)
    assert theirs.shape == ours.shape == (n, dim, n_steps)
    assert theirs.dtype == np.float64 and np.isfinite(theirs).all()
    ours, theirs = (x / np.sqrt(D)[:, None, None] for x in (ours, theirs))  # unit D
    a = 1.0 if alpha is None else alpha
    for k in (0, 1):
        expected = float(fgn_cov(a, k))
        sigma = lag_product_std(lambda d: fgn_cov(a, d), k, n_steps, n * dim)
        estimate_theirs, estimate_ours = lag_product_mean(theirs, k), lag_product_mean(ours, k)
        # andi-datasets, rescaled, against the exact value: 5 sigma of one estimator.
        assert abs(estimate_theirs - expected) < N_SIGMA * sigma, (k, estimate_theirs, expected)
        # The two independent estimators against each other: std sqrt(2) sigma.
        assert abs(estimate_theirs - estimate_ours) < N_SIGMA * math.sqrt(2) * sigma
    # Distribution: whitened by the exact covariance both are i.i.d. N(0, 1) (the KS test
    # needs independent values, which the raw correlated displacements are not).
    cov = scipy.linalg.toeplitz(fgn_cov(a, np.arange(n_steps)))
    white_theirs, white_ours = whiten(theirs, cov), whiten(ours, cov)
    assert scipy.stats.ks_2samp(white_theirs, white_ours).pvalue > P_5SIGMA
    assert scipy.stats.kstest(white_theirs, "norm").pvalue > P_5SIGMA


@pytest.mark.parametrize("alpha", [0.5, 1.5])
def test_sbm_matches_minrep_one_step_later(alpha):
    n, n_steps, D = 4000, 50, 0.02
    theirs = andi.simulate("sbm", alpha, D, n_steps, n=n, seed=6)[:, 0]
    # andi-datasets' time origin is one step earlier: its step t is minrep's step t + 1.
    ours = simulate("sbm", alpha, D, n_steps + 1, n=n, seed=7, dtype=np.float64)[:, 0, 1:]
    t = np.arange(n_steps, dtype=np.float64)
    expected = 2 * D * ((t + 2) ** alpha - (t + 1) ** alpha)  # Var of andi's (rescaled) step t
    # Steps are independent Gaussians: the mean of n squares at step t has relative std
    # sqrt(2 / n); the difference of two independent such estimates, sqrt(2) times that.
    var_theirs, var_ours = np.mean(theirs**2, axis=0), np.mean(ours**2, axis=0)
    rel = math.sqrt(2 / n)
    assert np.abs((var_theirs / expected - 1) / rel).max() < N_SIGMA
    assert np.abs((var_theirs - var_ours) / expected / (math.sqrt(2) * rel)).max() < N_SIGMA
    # Pooled over all steps (n L independent unit-variance values): rel. std sqrt(2 / (n L)).
    unit_theirs, unit_ours = theirs / np.sqrt(expected), ours / np.sqrt(expected)
    assert abs(np.mean(unit_theirs**2) - 1) < N_SIGMA * math.sqrt(2 / (n * n_steps))
    # Uncorrelated steps: lag-1 products of unit-variance steps have std 1/sqrt(n (L - 1)).
    assert abs(lag_product_mean(unit_theirs, 1)) < N_SIGMA / math.sqrt(n * (n_steps - 1))
    # Same distribution, and standard normal after normalisation.
    assert scipy.stats.ks_2samp(unit_theirs.ravel(), unit_ours.ravel()).pvalue > P_5SIGMA
    assert scipy.stats.kstest(unit_theirs.ravel(), "norm").pvalue > P_5SIGMA


def test_sbm_time_origin_is_not_minrep_s():
    # The comparison above must be able to fail: at t = 0 andi's rescaled step has variance
    # 2D (2^alpha - 1), not minrep's 2D. With n = 4000 the estimate's relative std is
    # sqrt(2/n) = 2.2 %, and 2^1.5 - 1 = 1.83 is 37 standard deviations away from 1.
    n, alpha = 4000, 1.5
    theirs = andi.simulate("sbm", alpha, 1.0, 5, n=n, seed=8)[:, 0, 0]
    ratio = np.mean(theirs**2) / 2.0
    assert abs(ratio - (2**alpha - 1)) < N_SIGMA * (2**alpha - 1) * math.sqrt(2 / n)


# ---------------------------------------------------------------------------------------------
# 2. Reproducibility and the global random state


@pytest.mark.parametrize("process", ["fbm", "sbm", "ctrw", "lw", "attm"])
def test_seeded_and_reproducible(process):
    alpha = {"fbm": 0.7, "sbm": 1.3, "ctrw": 0.6, "lw": 1.4, "attm": 0.6}[process]
    a = andi.simulate(process, alpha, 1.0, 30, n=4, dim=2, seed=11)
    b = andi.simulate(process, alpha, 1.0, 30, n=4, dim=2, seed=11)
    c = andi.simulate(process, alpha, 1.0, 30, n=4, dim=2, seed=12)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("process", ["fbm", "ctrw"])
def test_no_seed_is_fresh_randomness(process):
    # seed=None draws fresh randomness (it is not seed 0), even after the global state was
    # seeded, and the global state is still restored.
    np.random.seed(5)  # noqa: NPY002
    a = andi.simulate(process, 0.7, 1.0, 30, n=3, seed=None)
    np.random.seed(5)  # noqa: NPY002
    b = andi.simulate(process, 0.7, 1.0, 30, n=3, seed=None)
    assert not np.array_equal(a, b)
    assert not np.array_equal(a, andi.simulate(process, 0.7, 1.0, 30, n=3, seed=0))
    assert np.random.random_sample() == np.random.RandomState(5).random_sample()  # noqa: NPY002


def test_global_random_state_restored():
    np.random.seed(2024)  # noqa: NPY002
    before = np.random.get_state()  # noqa: NPY002
    generator = stochastic.random.generator
    andi.simulate("fbm", 0.7, 1.0, 30, n=3, seed=1)
    andi.simulate("ctrw", 0.7, 1.0, 30, n=3, seed=1)  # draws from np.random directly
    after = np.random.get_state()  # noqa: NPY002
    assert before[0] == after[0] and np.array_equal(before[1], after[1])
    assert before[2:] == after[2:]
    assert stochastic.random.generator is generator
    # and the stream continues exactly as if nothing had been drawn
    expected = np.random.RandomState(2024).random_sample(3)
    assert np.array_equal(np.random.random_sample(3), expected)  # noqa: NPY002


def test_global_random_state_restored_after_an_error(monkeypatch):
    class Failing:
        def fbm(self, T, alpha, D=1):
            np.random.random_sample(5)  # noqa: NPY002  (consume some global state)
            raise RuntimeError("boom")

    monkeypatch.setattr(andi, "_models_theory", lambda: Failing())
    np.random.seed(7)  # noqa: NPY002
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    generator = stochastic.random.generator
    with pytest.raises(RuntimeError, match="boom"):
        andi.simulate("fbm", 0.7, 1.0, 10, n=1, seed=3)
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    assert stochastic.random.generator is generator


# ---------------------------------------------------------------------------------------------
# 3. CTRW, LW, ATTM; scaling with D; errors


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize(("process", "alpha"), [("ctrw", 0.5), ("lw", 1.5), ("attm", 0.5)])
def test_andi_only_processes(process, alpha, dim):
    alphas = np.array([alpha, 1.0, alpha])  # 1.0 is in the closed range of each
    x = andi.simulate(process, alphas, 1.0, 40, dim=dim, seed=2)
    assert x.shape == (3, dim, 40) and x.dtype == np.float64
    assert np.isfinite(x).all()
    assert np.any(x != 0)


@pytest.mark.parametrize("process", ["fbm", "bm", "sbm", "ctrw", "lw", "attm"])
def test_d_scaling_is_exact(process):
    # Same seed, D multiplied by 4: displacements multiplied by exactly 2 (up to round-off).
    alpha = {"fbm": 0.7, "bm": None, "sbm": 1.3, "ctrw": 0.6, "lw": 1.4, "attm": 0.6}[process]
    one = andi.simulate(process, alpha, 1.0, 25, n=3, dim=2, seed=5)
    four = andi.simulate(process, alpha, 4.0, 25, n=3, dim=2, seed=5)
    np.testing.assert_allclose(four, 2 * one, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("process", "alpha"),
    [("ctrw", 1.5), ("ctrw", 0.0), ("attm", 1.5), ("attm", 0.0), ("lw", 0.5), ("lw", 2.5)],
)
def test_alpha_out_of_range(monkeypatch, process, alpha):
    # Rejected before andi-datasets is reached (its ATTM at alpha = 0 would loop forever, so a
    # regression must fail here, not hang).
    def unreachable():
        raise AssertionError("andi-datasets called with an invalid alpha")

    monkeypatch.setattr(andi, "_models_theory", unreachable)
    with pytest.raises(SimulationError, match=f"outside the range of {process}"):
        andi.simulate(process, alpha, 1.0, 20, n=2)


def test_other_errors():
    with pytest.raises(SimulationError, match=r"unknown process 'abc'.*ctrw"):
        andi.simulate("abc", 0.5, 1.0, 20, n=2)
    with pytest.raises(SimulationError, match="dim 1, 2 or 3, not 4"):
        andi.simulate("fbm", 0.5, 1.0, 20, n=2, dim=4)
    with pytest.raises(SimulationError, match="D must be finite and > 0"):
        andi.simulate("fbm", 0.5, -1.0, 20, n=2)
    with pytest.raises(SimulationError, match="outside the range of fbm"):
        andi.simulate("fbm", 2.0, 1.0, 20, n=2)


def test_make_dataset_with_andi_backend():
    kwargs = dict(alpha=[0.5, 1.5], D=[0.1], n_per_cell=3, n_positions=21, dim=2, seed=4)
    data = make_dataset("fbm", "small", backend="andi", **kwargs)
    again = make_dataset("fbm", "small", backend="andi", **kwargs)
    assert data.displacements.shape == (6, 2, 20) and data.displacements.dtype == np.float32
    assert data.displacements.tobytes() == again.displacements.tobytes()
    assert np.array_equal(data.labels["alpha"], [0.5] * 3 + [1.5] * 3)
    assert data.meta["andi_datasets_version"] == andi.installed_version()
    assert "andi" in data.meta["generator"] and data.meta["seed"] == 4
    expected = andi.simulate("fbm", data.labels["alpha"], data.labels["D"], 20, dim=2, seed=4)
    assert data.displacements.tobytes() == expected.astype(np.float32).tobytes()


# ---------------------------------------------------------------------------------------------
# 4. Installation problems


def test_clear_error_without_andi_datasets(monkeypatch):
    monkeypatch.setattr(andi, "installed_version", lambda: None)
    with pytest.raises(SimulationError, match=re.escape("pip install 'minrep[andi]'")):
        andi.simulate("fbm", 0.5, 1.0, 20, n=2)
    with pytest.raises(SimulationError, match=re.escape("pip install 'minrep[andi]'")):
        make_dataset("fbm", n_per_cell=1, n_positions=10, backend="andi")


def test_warning_for_another_andi_version(monkeypatch):
    assert andi.installed_version() == andi.PINNED_VERSION
    monkeypatch.setattr(andi, "installed_version", lambda: "9.9.9")
    with pytest.warns(UserWarning, match=r"andi-datasets 9\.9\.9 .* tested with 2\.1\.13"):
        x = andi.simulate("fbm", 0.5, 1.0, 20, n=2)
    assert x.shape == (2, 1, 20)
