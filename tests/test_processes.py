"""Tests of minrep.processes: exact BM/FBM/SBM simulation and the exact likelihood.

Statistical tolerances are never tuned: each is 5 standard deviations of the estimator under
the hypothesis being tested, derived from the sample size (and, for correlated FBM samples,
from the exact fourth moments of a Gaussian process via Isserlis' theorem). All seeds are
fixed, so every test is deterministic; a 5-sigma bound fails by chance with probability
~6e-7 for a Gaussian statistic.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import minrep.processes as processes
from minrep.processes import (
    SimulationError,
    check_parameters,
    displacement_covariance,
    exact_nll,
    expected_exact_nll,
    fgn_autocovariance,
    sbm_variance,
    simulate,
)

N_SIGMA = 5.0
# Two-sided tail probability of 5 sigma: the p-value threshold of distribution tests.
P_5SIGMA = 2 * scipy.stats.norm.sf(N_SIGMA)


# ---------------------------------------------------------------------------------------------
# Helpers: exact sampling variances of second-moment estimators of a zero-mean Gaussian series


def fgn_cov_hand(alpha: float, lags, D: float = 1.0) -> np.ndarray:
    """The fGn autocovariance written out independently of the package."""
    k = np.abs(np.asarray(lags, dtype=np.float64))
    return D * (np.abs(k + 1) ** alpha - 2 * np.abs(k) ** alpha + np.abs(k - 1) ** alpha)


def lag_product_mean(x: np.ndarray, k: int) -> float:
    """Estimator of Cov(x_t, x_{t+k}) (the mean is known to be 0): the mean over all series
    (every axis but the last) and all t of x_t x_{t+k}."""
    x = np.asarray(x, dtype=np.float64)
    m = x.shape[-1] - k
    return float(np.mean(x[..., :m] * x[..., k : k + m]))


def lag_product_std(gamma, k: int, n_steps: int, n_series: int) -> float:
    """Exact standard deviation of :func:`lag_product_mean` for ``n_series`` independent
    stationary Gaussian series of ``n_steps`` with autocovariance ``gamma(lag)``.

    With M = n_steps - k terms per series, Isserlis' theorem gives
    Cov(x_s x_{s+k}, x_t x_{t+k}) = gamma(s-t)^2 + gamma(s-t+k) gamma(s-t-k), so
    Var = sum_{d=-(M-1)}^{M-1} (M - |d|) [gamma(d)^2 + gamma(d+k) gamma(d-k)] / (M^2 n_series).
    """
    m = n_steps - k
    d = np.arange(-(m - 1), m)
    terms = gamma(d) ** 2 + gamma(d + k) * gamma(d - k)
    return math.sqrt(float(np.sum((m - np.abs(d)) * terms)) / (m**2 * n_series))


def assert_covariance_matrix(x: np.ndarray, cov: np.ndarray) -> None:
    """The sample covariance (zero mean known) of the rows of ``x`` (N, L) matches ``cov``.

    Entry (i, j) is a mean of N products with Var = (C_ii C_jj + C_ij^2) / N (Isserlis); each
    entry must lie within 5 of its own standard deviations (~L^2/2 entries: a Bonferroni
    factor of ~100 still leaves a chance failure probability below 1e-4).
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    sample = x.T @ x / n
    sigma = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    z = (sample - cov) / sigma
    assert np.abs(z).max() < N_SIGMA, f"max |z| = {np.abs(z).max():.2f}"


# ---------------------------------------------------------------------------------------------
# 1. Shapes, dtypes, Var(dx) = 2D


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize(
    ("process", "alpha"),
    [("bm", None), ("fbm", 0.1), ("fbm", 0.5), ("fbm", 1.0), ("fbm", 1.5), ("fbm", 1.9)],
)
def test_variance_is_2d(process, alpha, dim):
    n, n_steps = 600, 128
    rng = np.random.default_rng(11)
    D = 10 ** rng.uniform(-5, 0, n)  # per-trajectory D
    dx = simulate(process, alpha, D, n_steps, dim=dim, seed=1)
    assert dx.shape == (n, dim, n_steps)
    assert dx.dtype == np.float32
    assert np.isfinite(dx).all()
    normalised = dx / np.sqrt(D)[:, None, None]  # unit-D process: Var = 2 at every step
    estimate = lag_product_mean(normalised, 0)
    # The n*dim series are independent; within a series the steps are correlated with the
    # fGn autocovariance (BM: alpha = 1), so the exact std of the lag-0 estimator follows
    # from Isserlis' theorem (for BM it reduces to 2 sqrt(2 / (n dim L))).
    a = 1.0 if alpha is None else alpha
    sigma = lag_product_std(lambda d: fgn_cov_hand(a, d), 0, n_steps, n * dim)
    assert abs(estimate - 2.0) < N_SIGMA * sigma


def test_variance_is_2d_with_one_step_and_float64():
    # n_steps = 1 takes a separate branch; N i.i.d. N(0, 2D) values: rel. std sqrt(2 / N).
    n, D = 20000, 0.3
    dx = simulate("fbm", 0.7, D, 1, n=n, seed=3, dtype=np.float64)
    assert dx.shape == (n, 1, 1) and dx.dtype == np.float64
    estimate = np.mean(dx.astype(np.float64) ** 2)
    assert abs(estimate / (2 * D) - 1) < N_SIGMA * math.sqrt(2 / n)


def test_odd_number_of_series_and_mixed_alpha_grouping():
    # fGn series are drawn in pairs (real and imaginary parts): odd counts must still work, and
    # trajectories of each alpha must land in their own rows.
    alpha = np.array([0.3, 1.7, 0.3, 1.7, 0.3])
    dx = simulate("fbm", alpha, 1.0, 33, dim=1, seed=0, dtype=np.float64)
    assert dx.shape == (5, 1, 33)
    assert np.isfinite(dx).all()
    # The smallest alpha is drawn first from the generator, so its rows equal a one-alpha call.
    single = simulate("fbm", 0.3, 1.0, 33, n=3, seed=0, dtype=np.float64)
    assert np.array_equal(single, dx[alpha == 0.3])


# ---------------------------------------------------------------------------------------------
# 2. FBM autocovariance


@pytest.mark.parametrize("alpha", [0.4, 1.6])
def test_fbm_autocovariance(alpha):
    n, dim, n_steps, D = 1000, 2, 256, 0.5
    dx = simulate("fbm", alpha, D, n_steps, n=n, dim=dim, seed=7) / math.sqrt(D)
    for k in [0, 1, 2, 3, 4, 5, 20]:
        expected = fgn_cov_hand(alpha, k)
        # The package's formula agrees with the hand-written one.
        assert fgn_autocovariance(alpha, [k])[0] == pytest.approx(expected, rel=1e-14)
        estimate = lag_product_mean(dx, k)
        # 5 sigma of the lag-k estimator over n*dim independent correlated series (Isserlis;
        # this accounts for the within-trajectory correlation exactly instead of measuring it).
        sigma = lag_product_std(lambda d: fgn_cov_hand(alpha, d), k, n_steps, n * dim)
        assert abs(estimate - expected) < N_SIGMA * sigma, (k, estimate, expected, sigma)


@pytest.mark.parametrize("alpha", [0.4, 1.6])
def test_fbm_full_covariance_matrix(alpha):
    # Not only lag averages: every entry of the L x L covariance (stationarity included).
    n_steps = 17  # odd, so the circulant embedding has M = 34
    dx = simulate("fbm", alpha, 1.0, n_steps, n=20000, seed=5, dtype=np.float64)[:, 0]
    assert_covariance_matrix(dx, scipy.linalg.toeplitz(fgn_cov_hand(alpha, np.arange(n_steps))))


@pytest.mark.parametrize("force_cholesky", [False, True])
def test_fbm_series_are_independent(monkeypatch, force_cholesky):
    # All n*dim series of one call (components of one trajectory, and the real/imaginary
    # partners of one complex draw) must be independent. If x_b ~ N(0, G) independently of
    # x_a, then conditional on x_a, z_ab = x_a.x_b / sqrt(x_a' G x_a) is exactly N(0, 1), so
    # unconditionally too. Over the P = N (N - 1) ordered pairs a union (Bonferroni) bound
    # gives the threshold whose overall chance-failure probability is the 5-sigma p-value.
    # A duplicated series would give z ~ 2L / sqrt(x' G x) ~ sqrt(L) ~ 16 for alpha near 1.
    if force_cholesky:
        _force_cholesky(monkeypatch)
    alpha, n, dim, n_steps = 0.6, 100, 2, 256
    x = simulate("fbm", alpha, 1.0, n_steps, n=n, dim=dim, seed=17, dtype=np.float64)
    series = x.reshape(n * dim, n_steps)
    cov = scipy.linalg.toeplitz(fgn_cov_hand(alpha, np.arange(n_steps)))
    gram = series @ series.T
    quad = np.einsum("at,ts,as->a", series, cov, series)
    z = gram / np.sqrt(quad)[:, None]
    np.fill_diagonal(z, 0.0)
    pairs = (n * dim) * (n * dim - 1)
    threshold = scipy.stats.norm.isf(P_5SIGMA / 2 / pairs)
    assert np.abs(z).max() < threshold, (np.abs(z).max(), threshold)


@pytest.mark.parametrize(("n", "dim"), [(2, 2), (3, 1)])
def test_fbm_joint_covariance_of_a_whole_call(n, dim):
    # Stronger than the lag-0 test above: the joint covariance of everything one small call
    # returns (n * dim series of L steps) must be block diagonal, I kron Toeplitz, at every
    # pair of times. Estimated from R independent calls (one Generator passed along); each of
    # the ~(n dim L)^2 / 2 entries within 5 of its own standard deviations (Isserlis, as in
    # assert_covariance_matrix).
    alpha, n_steps, repeats = 0.6, 6, 8000
    rng = np.random.default_rng(19)
    samples = np.stack(
        [
            simulate("fbm", alpha, 1.0, n_steps, n=n, dim=dim, seed=rng).ravel()
            for _ in range(repeats)
        ]
    )
    toeplitz = scipy.linalg.toeplitz(fgn_cov_hand(alpha, np.arange(n_steps)))
    assert_covariance_matrix(samples, np.kron(np.eye(n * dim), toeplitz))


@pytest.mark.parametrize("alpha", [0.1, 0.7, 1.0, 1.3, 1.99])
@pytest.mark.parametrize("n_steps", [2, 7, 64])
def test_circulant_embedding_reproduces_covariance(alpha, n_steps):
    # Deterministic check of the Davies-Harte normalisation: the circulant matrix with the
    # eigenvalues M * sqrt_eig^2 has first row gamma(0..n), gamma(n-1..1).
    sqrt_eig = processes._circulant_sqrt_eigenvalues(alpha, n_steps)
    assert sqrt_eig is not None  # the fGn embedding is PSD for every alpha in (0, 2)
    full = np.concatenate([sqrt_eig, sqrt_eig[-2:0:-1]])
    m = full.size
    assert m == 2 * n_steps
    row = np.fft.ifft(full**2 * m).real
    gamma = fgn_cov_hand(alpha, np.arange(n_steps + 1))
    np.testing.assert_allclose(row[: n_steps + 1], gamma, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# 3. SBM


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("alpha", [0.5, 1.5])
def test_sbm_variance_law(alpha, dim):
    n, n_steps, D = 10000, 100, 2.5e-3
    dx = simulate("sbm", alpha, D, n_steps, n=n, dim=dim, seed=13).astype(np.float64)
    assert dx.shape == (n, dim, n_steps) and dx.dtype == np.float64
    t = np.arange(n_steps, dtype=np.float64)
    expected = 2 * D * ((t + 1) ** alpha - t**alpha)  # 0-indexed t, written out by hand
    np.testing.assert_allclose(sbm_variance(alpha, n_steps, D), expected, rtol=1e-12)
    # Steps are independent Gaussians: the mean of N = n*dim squares of step t has relative
    # std sqrt(2 / N). All L steps are tested at 5 sigma (Bonferroni factor 100 is harmless).
    estimate = np.mean(dx**2, axis=(0, 1))
    z = (estimate / expected - 1) / math.sqrt(2 / (n * dim))
    assert np.abs(z).max() < N_SIGMA, f"max |z| = {np.abs(z).max():.2f} at t = {np.argmax(z)}"
    # Steps are uncorrelated: lag-1 product mean of unit-variance steps, std 1/sqrt(N (L-1)).
    unit = dx / np.sqrt(expected)
    assert abs(lag_product_mean(unit, 1)) < N_SIGMA / math.sqrt(n * dim * (n_steps - 1))


def test_sbm_variance_law_per_trajectory_parameters():
    # Mixed alpha and D in one call: each group must get its own law.
    n_each, n_steps = 5000, 20
    alpha = np.repeat([0.5, 1.5], n_each)
    D = np.repeat([1e-4, 3.0], n_each)
    dx = simulate("sbm", alpha, D, n_steps, seed=2).astype(np.float64)
    t = np.arange(n_steps)
    for a, d in [(0.5, 1e-4), (1.5, 3.0)]:
        rows = dx[alpha == a, 0]
        expected = 2 * d * ((t + 1) ** a - t**a)
        z = (np.mean(rows**2, axis=0) / expected - 1) / math.sqrt(2 / n_each)
        assert np.abs(z).max() < N_SIGMA


# ---------------------------------------------------------------------------------------------
# 4. Cholesky fall-back


def _force_cholesky(monkeypatch):
    """Make the circulant embedding "fail" and count the Cholesky factorisations."""
    calls = []
    original = np.linalg.cholesky

    def spy(a):
        calls.append(a.shape)
        return original(a)

    monkeypatch.setattr(
        processes, "_circulant_sqrt_eigenvalues", lambda alpha, n, exposure=0.0: None
    )
    monkeypatch.setattr(processes.np.linalg, "cholesky", spy)
    return calls


@pytest.mark.parametrize("alpha", [0.4, 1.6])
def test_cholesky_fallback_covariance(monkeypatch, alpha):
    n, n_steps = 20000, 16
    calls = _force_cholesky(monkeypatch)
    dx = simulate("fbm", alpha, 1.0, n_steps, n=n, seed=21, dtype=np.float64)
    assert calls == [(n_steps, n_steps)]  # the fall-back path really ran
    assert dx.shape == (n, 1, n_steps) and dx.dtype == np.float64
    cov = scipy.linalg.toeplitz(fgn_cov_hand(alpha, np.arange(n_steps)))
    assert_covariance_matrix(dx[:, 0], cov)


@pytest.mark.parametrize("alpha", [0.4, 1.6])
def test_cholesky_and_circulant_paths_agree_in_distribution(monkeypatch, alpha):
    n, n_steps = 10000, 24
    circulant = simulate("fbm", alpha, 1.0, n_steps, n=n, seed=31, dtype=np.float64)[:, 0]
    calls = _force_cholesky(monkeypatch)
    cholesky = simulate("fbm", alpha, 1.0, n_steps, n=n, seed=32, dtype=np.float64)[:, 0]
    assert len(calls) == 1
    cov = scipy.linalg.toeplitz(fgn_cov_hand(alpha, np.arange(n_steps)))
    # The two sample covariances are independent estimates of the same matrix: their difference
    # has std sqrt(2) times that of one estimate (Isserlis, as in assert_covariance_matrix).
    diff = (circulant.T @ circulant - cholesky.T @ cholesky) / n
    sigma = np.sqrt(2 * (np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.abs(diff / sigma).max() < N_SIGMA
    # Whitened by the exact Cholesky factor, both must be i.i.d. N(0, 1): a two-sample KS test
    # on all n*L whitened values, and each against the standard normal, at the 5-sigma p-value.
    lower = np.linalg.cholesky(cov)
    white_c = scipy.linalg.solve_triangular(lower, circulant.T, lower=True).ravel()
    white_k = scipy.linalg.solve_triangular(lower, cholesky.T, lower=True).ravel()
    assert scipy.stats.ks_2samp(white_c, white_k).pvalue > P_5SIGMA
    assert scipy.stats.kstest(white_c, "norm").pvalue > P_5SIGMA
    assert scipy.stats.kstest(white_k, "norm").pvalue > P_5SIGMA


# ---------------------------------------------------------------------------------------------
# 5. Reproducibility


@pytest.mark.parametrize("process", ["bm", "fbm", "sbm"])
def test_same_seed_same_bytes(process):
    alpha = np.array([0.3, 1.2, 0.3, 1.7]) if process != "bm" else None
    kwargs = dict(D=np.array([1e-3, 1.0, 2.0, 5e-5]), n_steps=50, dim=2)
    a = simulate(process, alpha, seed=123, **kwargs)
    b = simulate(process, alpha, seed=123, **kwargs)
    c = simulate(process, alpha, seed=124, **kwargs)
    assert np.array_equal(a, b)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)
    # A Generator as seed is consumed like the integer seed.
    d = simulate(process, alpha, seed=np.random.default_rng(123), **kwargs)
    assert d.tobytes() == a.tobytes()


@pytest.mark.parametrize("process", ["bm", "fbm", "sbm"])
def test_no_seed_is_fresh_randomness(process):
    # seed=None is not seed 0: two calls differ from each other and from seed 0 (200 float32
    # draws coinciding by chance has probability ~0).
    kwargs = dict(alpha=0.7, D=1.0, n_steps=50, n=2, dim=2)
    a, b = simulate(process, seed=None, **kwargs), simulate(process, seed=None, **kwargs)
    zero = simulate(process, seed=0, **kwargs)
    assert not np.array_equal(a, b)
    assert not np.array_equal(a, zero) and not np.array_equal(b, zero)
    assert not np.array_equal(simulate(process, **kwargs), simulate(process, **kwargs))


def test_physics_only_and_without_torch():
    # processes is the physics: importing it loads neither the datasets layer, nor the
    # andi backend, nor torch.
    code = (
        "import sys, minrep.processes; "
        "print(sorted(m for m in ('torch', 'minrep.datasets', 'minrep.andi', 'minrep.io') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    for moved in ("make_dataset", "PRESETS", "preset_grid", "Grid"):
        assert not hasattr(processes, moved), f"{moved} lives in minrep.datasets"


def test_check_parameters_ranges_of_andi_only_processes():
    for process, bad in [
        ("ctrw", [0.0, 1.01, -0.5]),
        ("attm", [0.0, 1.01]),  # alpha = 0 makes andi-datasets' ATTM loop forever
        ("lw", [0.99, 2.01]),
    ]:
        for a in bad:
            with pytest.raises(SimulationError, match=f"outside the range of {process}"):
                check_parameters(process, a, 1.0)
    for process, good in [("ctrw", [1.0, 0.04]), ("attm", [1.0, 0.04]), ("lw", [1.0, 2.0])]:
        alpha, D = check_parameters(process, good, 1.0)
        assert np.array_equal(alpha, good) and np.array_equal(D, [1.0, 1.0])


# ---------------------------------------------------------------------------------------------
# 6. Errors


def test_unknown_process():
    with pytest.raises(SimulationError, match=r"unknown process 'levy'.*bm, fbm, sbm"):
        simulate("levy", 1.0, 1.0, 10)
    with pytest.raises(SimulationError, match="unknown process 'levy'"):
        exact_nll(np.zeros((1, 1, 10)), "levy", 1.0, 1.0, start=0)


@pytest.mark.parametrize("alpha", [2.0, 0.0, -0.3, 2.5, np.nan])
def test_fbm_alpha_out_of_range(alpha):
    with pytest.raises(SimulationError, match=r"alpha = .* outside the range of fbm \(0.0, 2.0\)"):
        simulate("fbm", alpha, 1.0, 10, n=2)
    # also inside an array: the first offending value is named
    with pytest.raises(SimulationError, match="outside the range of fbm"):
        simulate("fbm", [0.5, alpha, 1.0], 1.0, 10)


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_sbm_alpha_out_of_range(alpha):
    with pytest.raises(SimulationError, match="outside the range of sbm"):
        simulate("sbm", alpha, 1.0, 10, n=2)


def test_bm_ignores_alpha():
    a = simulate("bm", 0.3, 1.0, 10, n=4, seed=0)
    b = simulate("bm", 5.0, 1.0, 10, n=4, seed=0)
    c = simulate("bm", None, 1.0, 10, n=4, seed=0)
    assert a.tobytes() == b.tobytes() == c.tobytes()


@pytest.mark.parametrize("D", [0.0, -1.0, np.nan, np.inf])
@pytest.mark.parametrize("process", ["bm", "fbm", "sbm"])
def test_bad_D(process, D):
    with pytest.raises(SimulationError, match=r"D must be finite and > 0; trajectory 1 has D ="):
        simulate(process, 0.5, [1.0, D, 2.0], 10)


def test_wrong_length_parameter_arrays():
    with pytest.raises(SimulationError, match=r"one value per trajectory \(5\)"):
        simulate("fbm", [0.5, 1.0, 1.5], 1.0, 10, n=5)
    with pytest.raises(SimulationError, match="must be scalars or have one value per trajectory"):
        simulate("fbm", [0.5, 1.0, 1.5], [1.0, 2.0], 10)
    with pytest.raises(SimulationError, match="one value per trajectory"):
        exact_nll(np.zeros((4, 1, 10)), "fbm", [0.5, 1.0], 1.0, start=0)


def test_bad_sizes():
    with pytest.raises(SimulationError, match="n_steps >= 1"):
        simulate("fbm", 0.5, 1.0, 0, n=1)
    with pytest.raises(SimulationError, match="dim >= 1"):
        simulate("fbm", 0.5, 1.0, 10, n=1, dim=0)
    x = np.zeros((2, 1, 10))
    with pytest.raises(ValueError, match=r"shape \(n, dim, L\)"):
        exact_nll(x[:, 0], "fbm", 0.5, 1.0)
    with pytest.raises(ValueError, match=r"start must be in \[0, 9\]"):
        exact_nll(x, "fbm", 0.5, 1.0, start=10)
    with pytest.raises(ValueError, match="memory must be >= 0"):
        exact_nll(x, "fbm", 0.5, 1.0, start=0, memory=-1)


# ---------------------------------------------------------------------------------------------
# 7. exact_nll against scipy


def _nll_setup(process, seed=0):
    alpha = np.array([0.3, 1.0, 1.7]) if process != "bm" else np.ones(3)
    D = np.array([0.5, 2.0, 1e-3])
    x = simulate(
        process, alpha if process != "bm" else None, D, 12, dim=2, seed=seed, dtype=np.float64
    )
    return x, alpha, D


def _fbm_cov(alpha, D, n_steps):
    return scipy.linalg.toeplitz(fgn_cov_hand(alpha, np.arange(n_steps), D))


def test_exact_nll_fbm_full_memory_from_start_zero():
    x, alpha, D = _nll_setup("fbm")
    n, dim, n_steps = x.shape
    nll = exact_nll(x, "fbm", alpha, D, start=0, memory=None)
    assert nll.shape == (n,)
    for i in range(n):
        mvn = scipy.stats.multivariate_normal(
            mean=np.zeros(n_steps), cov=_fbm_cov(alpha[i], D[i], n_steps)
        )
        total = -sum(mvn.logpdf(x[i, c]) for c in range(dim))
        np.testing.assert_allclose(nll[i] * n_steps * dim, total, rtol=1e-10)


@pytest.mark.parametrize("start", [1, 5, 11])
def test_exact_nll_fbm_full_memory_from_later_start(start):
    x, alpha, D = _nll_setup("fbm", seed=1)
    n, dim, n_steps = x.shape
    nll = exact_nll(x, "fbm", alpha, D, start=start, memory=None)
    for i in range(n):
        cov = _fbm_cov(alpha[i], D[i], n_steps)
        full = scipy.stats.multivariate_normal(mean=np.zeros(n_steps), cov=cov)
        head = scipy.stats.multivariate_normal(mean=np.zeros(start), cov=cov[:start, :start])
        # log p(x[s:] | x[:s]) = log p(x) - log p(x[:s]), summed over components
        total = -sum(full.logpdf(x[i, c]) - head.logpdf(x[i, c, :start]) for c in range(dim))
        np.testing.assert_allclose(nll[i] * (n_steps - start) * dim, total, rtol=1e-10)


def _conditional_nll_by_hand(x_past, x_t, cov):
    """-log p(x_t | x_past) for a zero-mean Gaussian with joint covariance ``cov`` ordered
    (past..., t): the Schur complement, solved directly with numpy."""
    k = x_past.size
    if k == 0:
        mean, var = 0.0, cov[0, 0]
    else:
        s_pp, s_pt = cov[:k, :k], cov[:k, k]
        mean = s_pt @ np.linalg.solve(s_pp, x_past)
        var = cov[k, k] - s_pt @ np.linalg.solve(s_pp, s_pt)
    return 0.5 * (np.log(2 * np.pi * var) + (x_t - mean) ** 2 / var)


@pytest.mark.parametrize("memory", [0, 1, 3, 11, 50])
def test_exact_nll_fbm_finite_memory(memory):
    x, alpha, D = _nll_setup("fbm", seed=2)
    n, dim, n_steps = x.shape
    by_hand = np.empty((n, n_steps))
    for i in range(n):
        for t in range(n_steps):
            k = min(t, memory)
            cov = _fbm_cov(alpha[i], D[i], k + 1)  # (past k steps, step t): stationary
            by_hand[i, t] = np.mean(
                [_conditional_nll_by_hand(x[i, c, t - k : t], x[i, c, t], cov) for c in range(dim)]
            )
    # Each step alone: a series cut after step t, with start = t.
    for t in range(n_steps):
        step = exact_nll(x[..., : t + 1], "fbm", alpha, D, start=t, memory=memory)
        np.testing.assert_allclose(step, by_hand[:, t], rtol=1e-10)
    # and the mean over steps start..L-1
    nll = exact_nll(x, "fbm", alpha, D, start=2, memory=memory)
    np.testing.assert_allclose(nll, by_hand[:, 2:].mean(axis=1), rtol=1e-10)


def test_exact_nll_memory_covering_the_past_equals_full_memory():
    x, alpha, D = _nll_setup("fbm", seed=3)
    full = exact_nll(x, "fbm", alpha, D, start=4, memory=None)
    np.testing.assert_allclose(exact_nll(x, "fbm", alpha, D, start=4, memory=11), full, rtol=1e-12)
    np.testing.assert_allclose(exact_nll(x, "fbm", alpha, D, start=4, memory=99), full, rtol=1e-12)
    # while a short memory differs for alpha != 1 and not for alpha = 1
    short = exact_nll(x, "fbm", alpha, D, start=4, memory=1)
    assert not np.isclose(short[0], full[0], rtol=1e-8) and not np.isclose(
        short[2], full[2], rtol=1e-8
    )
    np.testing.assert_allclose(short[1], full[1], rtol=1e-12)


@pytest.mark.parametrize("start", [0, 3])
def test_exact_nll_sbm_and_bm_against_norm_logpdf(start):
    t = np.arange(12, dtype=np.float64)
    for process in ("sbm", "bm"):
        x, alpha, D = _nll_setup(process, seed=4)
        nll = exact_nll(x, process, alpha if process == "sbm" else None, D, start=start)
        for i in range(x.shape[0]):
            if process == "sbm":
                var = 2 * D[i] * ((t + 1) ** alpha[i] - t ** alpha[i])
            else:
                var = np.full(t.size, 2 * D[i])
            logpdf = scipy.stats.norm.logpdf(x[i, :, start:], scale=np.sqrt(var[start:]))
            np.testing.assert_allclose(nll[i], -logpdf.mean(), rtol=1e-10)
        # Steps are independent: memory changes nothing.
        for memory in (0, 2):
            other = exact_nll(x, process, alpha, D, start=start, memory=memory)
            np.testing.assert_array_equal(other, nll)


def test_exact_nll_bm_equals_fbm_at_alpha_one():
    x, _, D = _nll_setup("bm", seed=5)
    bm = exact_nll(x, "bm", None, D, start=2)
    fbm = exact_nll(x, "fbm", 1.0, D, start=2)
    np.testing.assert_allclose(fbm, bm, rtol=1e-12)


def test_exact_nll_scalar_parameters_broadcast():
    x = simulate("fbm", 0.6, 0.2, 12, n=4, dim=2, seed=6, dtype=np.float64)
    scalar = exact_nll(x, "fbm", 0.6, 0.2, start=3)
    array = exact_nll(x, "fbm", np.full(4, 0.6), np.full(4, 0.2), start=3)
    np.testing.assert_array_equal(scalar, array)
    # Each trajectory's NLL depends on it alone.
    np.testing.assert_allclose(exact_nll(x[2:3], "fbm", 0.6, 0.2, start=3), scalar[2:3], rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# 8. exact_nll against the analytic entropy


@pytest.mark.parametrize(
    ("process", "memory"),
    [("fbm", None), ("fbm", 16), ("fbm", 0), ("sbm", None), ("bm", None)],
)
def test_mean_exact_nll_matches_expected(process, memory):
    n, n_steps, start, dim = 2000, 128, 32, 2
    rng = np.random.default_rng(40)
    if process == "fbm":
        alpha = rng.choice([0.3, 0.8, 1.0, 1.5, 1.9], n)
    elif process == "sbm":
        alpha = rng.choice([0.5, 1.5], n)
    else:
        alpha = None
    D = 10 ** rng.uniform(-5, 0, n)
    x = simulate(process, alpha, D, n_steps, dim=dim, seed=41)
    nll = exact_nll(x, process, alpha, D, start=start, memory=memory)
    expected = expected_exact_nll(process, alpha, D, n_steps, start=start, memory=memory)
    assert nll.shape == expected.shape == (n,)
    # Per-trajectory deviations are independent across trajectories: their mean has std
    # (measured std) / sqrt(n); 5 sigma. (The per-trajectory std is ~sqrt(0.5 / (dim (L-start)))
    # nat, so this bound is ~0.004 nat: tight against any scale or time-origin error.)
    diff = nll - expected
    assert abs(diff.mean()) < N_SIGMA * diff.std(ddof=1) / math.sqrt(n)


@pytest.mark.parametrize("process", ["bm", "fbm", "sbm"])
def test_mean_exact_nll_with_measurement_matches_expected(process):
    n, n_steps, start, dim = 1500, 48, 8, 2
    rng = np.random.default_rng(42)
    alpha = None if process == "bm" else rng.choice([0.5, 1.5], n)
    D = 10 ** rng.uniform(-3, -1, n)
    noise, exposure = np.sqrt(2 * D * rng.uniform(0, 1, n)), rng.choice([0.0, 0.5, 1.0], n)
    x = simulate(process, alpha, D, n_steps, dim=dim, seed=43, noise=noise, exposure=exposure)
    measurement = {"noise": noise, "exposure": exposure}
    nll = exact_nll(x, process, alpha, D, start=start, **measurement)
    expected = expected_exact_nll(process, alpha, D, n_steps, start=start, **measurement)
    diff = nll - expected
    assert abs(diff.mean()) < N_SIGMA * diff.std(ddof=1) / math.sqrt(n)


def test_expected_exact_nll_closed_forms():
    # memory = 0 (or BM): 0.5 log(2 pi e 2D); SBM: the mean of 0.5 log(2 pi e Var(dx_t)).
    D = np.array([1e-3, 1.0, 7.0])
    base = 0.5 * np.log(2 * np.pi * np.e * 2 * D)
    np.testing.assert_allclose(expected_exact_nll("bm", None, D, 50, start=10), base, rtol=1e-13)
    np.testing.assert_allclose(
        expected_exact_nll("fbm", 0.4, D, 50, start=10, memory=0), base, rtol=1e-13
    )
    np.testing.assert_allclose(expected_exact_nll("fbm", 1.0, D, 50, start=10), base, rtol=1e-13)
    t = np.arange(10, 50, dtype=np.float64)
    var = 2 * ((t + 1) ** 1.5 - t**1.5)
    sbm = 0.5 * np.mean(np.log(2 * np.pi * np.e * var)) + 0.5 * np.log(D)
    np.testing.assert_allclose(expected_exact_nll("sbm", 1.5, D, 50, start=10), sbm, rtol=1e-13)
    # FBM full memory from start 0: the entropy of the Toeplitz Gaussian per step.
    cov = scipy.linalg.toeplitz(fgn_cov_hand(1.3, np.arange(20)))
    entropy = scipy.stats.multivariate_normal(np.zeros(20), cov).entropy() / 20
    np.testing.assert_allclose(
        expected_exact_nll("fbm", 1.3, 1.0, 20, start=0), entropy, rtol=1e-10
    )


# ---------------------------------------------------------------------------------------------
# 9. Conditioning on more cannot increase the entropy


@pytest.mark.parametrize("alpha", [0.2, 0.6, 1.3, 1.8])
def test_more_memory_lower_expected_nll(alpha):
    n_steps, start = 128, 32
    values = [
        expected_exact_nll("fbm", alpha, 1.0, n_steps, start=start, memory=m)[0]
        for m in (0, 1, 8, 32, None)
    ]
    # Strictly decreasing for alpha != 1 (every partial autocorrelation of fGn is nonzero);
    # the smallest gap here is ~1e-5 nat, far above round-off.
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values


def test_memory_irrelevant_at_alpha_one():
    values = [
        expected_exact_nll("fbm", 1.0, 1.0, 128, start=32, memory=m)[0] for m in (0, 32, None)
    ]
    np.testing.assert_allclose(values, values[0], rtol=1e-14)
    assert values[0] == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 2.0), rel=1e-14)


# ---------------------------------------------------------------------------------------------
# 6. The measurement: localisation noise and motion blur


def position_kernel(process: str, alpha: float):
    """Covariance of the true positions x(s), x(t) at D = 1, written out again."""
    if process == "sbm":
        return lambda s, t: 2 * min(s, t) ** alpha
    return lambda s, t: s**alpha + t**alpha - abs(t - s) ** alpha


def brute_force_covariance(process, alpha, n_steps, exposure, noise):
    """The observed displacements' covariance by adaptive numerical integration of the
    position covariance over every pair of exposure windows (independent of the closed
    forms), then differencing, plus the noise of each frame."""
    import scipy.integrate

    kernel = position_kernel(process, alpha)
    f, frames = exposure, n_steps + 1
    positions = np.empty((frames, frames))
    options = {"epsabs": 1e-13, "epsrel": 1e-13}
    for j in range(frames):
        for k in range(j, frames):
            if j == k:  # twice the triangle t > s: the kink at s = t on its edge
                value, _ = scipy.integrate.dblquad(
                    lambda t, s: kernel(s, t), j, j + f, lambda s: s, j + f, **options
                )
                value *= 2
            else:
                value, _ = scipy.integrate.dblquad(
                    lambda t, s: kernel(s, t), j, j + f, k, k + f, **options
                )
            positions[j, k] = positions[k, j] = value / f**2
    positions += noise**2 * np.eye(frames)
    return positions[1:, 1:] - positions[1:, :-1] - positions[:-1, 1:] + positions[:-1, :-1]


@pytest.mark.parametrize(
    ("process", "alpha"), [("bm", 1.0), ("fbm", 0.3), ("fbm", 1.7), ("sbm", 0.5), ("sbm", 1.5)]
)
@pytest.mark.parametrize("exposure", [0.3, 1.0])
def test_blurred_noisy_covariance_equals_brute_force_integration(process, alpha, exposure):
    n_steps, noise = 5, 0.4
    exact = displacement_covariance(process, alpha, n_steps, 1.0, noise, exposure)
    brute = brute_force_covariance(process, alpha, n_steps, exposure, noise)
    np.testing.assert_allclose(exact, brute, rtol=0, atol=1e-8)


def test_blurred_bm_has_the_published_moments():
    # Savin and Doyle (2005), Berglund (2010): exposure f gives Var(dy) = 2D (1 - f/3) and a
    # lag-1 covariance 2D f/6; with localisation error sigma, 2 sigma^2 and -sigma^2 more.
    for f, sigma in ((1.0, 0.0), (0.5, 0.0), (0.5, 0.3)):
        cov = displacement_covariance("bm", 1.0, 6, 2.0, sigma, f)
        np.testing.assert_allclose(np.diag(cov), 4 * (1 - f / 3) + 2 * sigma**2, rtol=1e-12)
        np.testing.assert_allclose(np.diag(cov, 1), 4 * f / 6 - sigma**2, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.triu(cov, 2), 0, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 1.8])
@pytest.mark.parametrize("exposure", [1e-3, 0.5, 1.0])
def test_blurred_fgn_autocovariance_to_long_lags(alpha, exposure):
    # The closed form in 60-digit decimal arithmetic against the float64 result, which uses a
    # series at long lags (the closed form loses (u / f)^2 of its digits there); and a short
    # exposure nearly the unblurred autocovariance.
    from decimal import Decimal, getcontext

    getcontext().prec = 60
    a, f = Decimal(repr(alpha)), Decimal(repr(exposure))

    def g(v):
        return abs(v) ** (a + 2) / ((a + 1) * (a + 2)) if v != 0 else Decimal(0)

    def w(u):
        return (g(u + f) - 2 * g(u) + g(u - f)) / f**2

    lags = np.array([0, 1, 2, 3, 7, 40, 300, 1000])
    precise = [
        float(w(Decimal(int(k) + 1)) - 2 * w(Decimal(int(k))) + w(Decimal(abs(int(k) - 1))))
        for k in lags
    ]
    computed = fgn_autocovariance(alpha, lags, 1.0, exposure)
    np.testing.assert_allclose(computed, precise, rtol=1e-9, atol=1e-13)
    if exposure == 1e-3:
        # The blur changes lag 0 by at most 2 W(0) + O(f^2) <= 2 f^alpha, the rest by O(f^2).
        unblurred = fgn_cov_hand(alpha, lags)
        assert abs(computed[0] - unblurred[0]) <= 2 * exposure**alpha + 1e-5
        np.testing.assert_allclose(computed[2:], unblurred[2:], rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize(
    ("process", "alpha"), [("bm", None), ("fbm", 0.5), ("fbm", 1.5), ("sbm", 0.6), ("sbm", 1.4)]
)
def test_simulated_measurement_has_the_exact_covariance(process, alpha):
    n_steps, D, noise, exposure = 8, 0.5, 0.3, 0.7
    x = simulate(
        process,
        alpha,
        D,
        n_steps,
        n=20_000,
        seed=5,
        dtype=np.float64,
        noise=noise,
        exposure=exposure,
    )
    cov = displacement_covariance(process, alpha or 1.0, n_steps, D, noise, exposure)
    assert_covariance_matrix(x[:, 0], cov)


def test_measurement_per_trajectory_and_unchanged_bytes_without_it():
    alpha, D = np.array([0.5, 1.5, 0.5]), np.array([1.0, 0.1, 2.0])
    plain = simulate("fbm", alpha, D, 16, seed=3)
    assert np.array_equal(simulate("fbm", alpha, D, 16, seed=3, noise=0.0, exposure=0.0), plain)
    noisy = simulate("sbm", alpha, D, 16, seed=3, noise=[0.0, 0.1, 0.2], exposure=[0, 1, 0.5])
    assert noisy.shape == (3, 1, 16) and np.isfinite(noisy).all()
    with pytest.raises(SimulationError, match="noise must be finite and >= 0"):
        simulate("bm", None, 1.0, 8, n=2, noise=-0.1)
    with pytest.raises(
        SimulationError, match=r"exposure must be in \[0, 1\].*; trajectory 1 has 1.5"
    ):
        simulate("fbm", 0.5, 1.0, 8, n=2, exposure=[0.5, 1.5])
    with pytest.raises(SimulationError, match="one value per trajectory"):
        simulate("fbm", 0.5, 1.0, 8, n=3, noise=[0.1, 0.2])


@pytest.mark.parametrize("process", ["bm", "fbm", "sbm"])
@pytest.mark.parametrize("start", [0, 4])
def test_exact_nll_with_measurement_against_the_multivariate_normal(process, start):
    x, alpha, D = _nll_setup(process, seed=2)
    n, dim, n_steps = x.shape
    noise, exposure = np.array([0.2, 0.0, 0.05]), np.array([0.8, 0.4, 0.0])
    nll = exact_nll(x, process, alpha, D, start=start, noise=noise, exposure=exposure)
    for i in range(n):
        cov = displacement_covariance(process, alpha[i], n_steps, D[i], noise[i], exposure[i])
        total = 0.0
        for c in range(dim):
            total -= scipy.stats.multivariate_normal(cov=cov).logpdf(x[i, c])
            if start:
                lead = cov[:start, :start]
                total += scipy.stats.multivariate_normal(cov=lead).logpdf(x[i, c, :start])
        np.testing.assert_allclose(nll[i] * (n_steps - start) * dim, total, rtol=1e-9)
    with pytest.raises(ValueError, match="memory=None"):
        exact_nll(x, process, alpha, D, start=0, memory=3, noise=0.1)


def test_measured_factors_are_computed_one_group_at_a_time(monkeypatch):
    """With noise drawn per trajectory every trajectory is its own group: the factors are
    made as the loop reaches them, so that one is in memory at a time (20,000 at once, a
    validation set of 399-step tracks, took 25 GB)."""
    calls = []
    real = processes.displacement_covariance

    def counted(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(processes, "displacement_covariance", counted)
    alpha, D = np.array([0.5, 0.5, 1.2]), np.array([1e-3, 1e-3, 1e-2])
    noise, exposure = np.array([0.01, 0.01, 0.02]), np.array([0.0, 0.0, 1.0])
    factors = processes._MeasuredFactors("fbm", alpha, D, noise, exposure, 50)
    assert len(factors) == 2 and not calls  # the first two share alpha, f and sigma^2 / D
    groups = iter(factors)
    first, lower = next(groups)
    assert list(first) == [0, 1] and lower.shape == (50, 50) and len(calls) == 1


def test_fbm_msd_of_observed_positions():
    """2 D t^alpha without measurement; with noise and blur, the MSD of positions simulated
    with them (ensemble mean of 4,000 tracks: standard error under 3 %) and, at lag 1, the
    displacements' variance plus nothing else: Var(dx) = gamma(0) + 2 sigma^2."""
    lags = np.array([1, 2, 5, 10, 50])
    for alpha in (0.4, 1.0, 1.6):
        np.testing.assert_allclose(processes.fbm_msd(alpha, lags, D=0.3), 0.6 * lags**alpha)
    alpha, D, noise, exposure = 0.7, 1e-3, 0.02, 0.8
    msd = processes.fbm_msd(alpha, lags, D, noise, exposure)
    assert msd[0] == pytest.approx(
        processes.fgn_autocovariance(alpha, [0], D, exposure)[0] + 2 * noise**2, rel=1e-12
    )
    dx = processes.simulate(
        "fbm", np.full(4000, alpha), D, 60, dim=1, seed=3, noise=np.full(4000, noise),
        exposure=np.full(4000, exposure), dtype=np.float64,
    )  # fmt: skip
    x = np.cumsum(dx[:, 0], axis=1)
    measured = np.array([np.mean((x[:, lag] - x[:, 0]) ** 2) for lag in lags])
    np.testing.assert_allclose(measured, msd, rtol=0.08)
    for bad in ([0, 1], [1.5], []):
        with pytest.raises(ValueError, match="whole numbers >= 1"):
            processes.fbm_msd(alpha, bad)
