"""Classical statistics of trajectories: MSDs, exponent fits, correlations, D(t).

Every function takes displacements of shape ``(n, dim, L)`` (trajectories of T = L + 1
positions, time in steps). MSDs are summed over the ``dim`` components, so for the processes of
:mod:`minrep.processes` MSD(t) = 2 dim D t^alpha; fits return the per-component D.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.linalg
import scipy.special

from minrep.progress import bar

_CHUNK = 8192  # trajectories per FFT batch: bounds memory (~100 MB at T = 400) and paces progress


def _as_displacements(displacements) -> np.ndarray:
    dx = np.asarray(displacements)
    if dx.ndim != 3:
        raise ValueError(f"displacements must have shape (n, dim, L), got {dx.shape}")
    return dx


def positions(displacements) -> np.ndarray:
    """Positions ``(n, dim, L + 1)`` starting at 0, float64."""
    dx = _as_displacements(displacements).astype(np.float64)
    return np.concatenate([np.zeros(dx.shape[:2] + (1,)), np.cumsum(dx, axis=-1)], axis=-1)


def _lagged_products(x: np.ndarray, max_lag: int) -> np.ndarray:
    """sum_i x[..., i] x[..., i + k] for k = 0 .. max_lag, by FFT; ``x`` is ``(..., T)``."""
    size = scipy.fft.next_fast_len(x.shape[-1] + max_lag + 1, real=True)
    spectrum = scipy.fft.rfft(x, n=size, axis=-1, workers=-1)
    spectrum *= spectrum.conj()
    return scipy.fft.irfft(spectrum, n=size, axis=-1, workers=-1)[..., : max_lag + 1]


def ta_msd(
    displacements, max_lag: int | None = None, start: int = 0, progress: bool = False
) -> np.ndarray:
    """Time-averaged MSD (paper eq. A4) of each trajectory at lags 1 .. ``max_lag``.

    TA-MSD(k) = 1/(T - k) sum_i |x(t_i + k) - x(t_i)|^2 over the positions from ``start`` on
    (``start`` > 0 keeps only the end of each trajectory). Returns ``(n, max_lag)``; column
    ``k - 1`` is lag ``k``. Computed by FFT in O(T log T) per trajectory.
    """
    x = positions(displacements)[..., start:]
    n, _, n_positions = x.shape
    max_lag = n_positions - 1 if max_lag is None else max_lag
    if not 1 <= max_lag < n_positions:
        raise ValueError(f"max_lag must be in [1, {n_positions - 1}], got {max_lag}")
    lags = np.arange(1, max_lag + 1)
    out = np.empty((n, max_lag))
    chunks = range(0, n, _CHUNK)
    for lo in bar(chunks, desc="TA-MSD", enabled=progress and len(chunks) > 1, unit="chunk"):
        chunk = x[lo : lo + _CHUNK]
        # Centring changes no difference but keeps the FFT free of cancellation errors.
        chunk = chunk - chunk.mean(axis=-1, keepdims=True)
        cumsq = np.concatenate(
            [np.zeros(chunk.shape[:2] + (1,)), np.cumsum(chunk**2, axis=-1)], axis=-1
        )
        # sum_{i < T-k} x_i^2 + sum_{i >= k} x_i^2 - 2 sum_i x_i x_{i+k}
        squares = cumsq[..., n_positions - lags] + cumsq[..., -1:] - cumsq[..., lags]
        cross = _lagged_products(chunk, max_lag)[..., 1:]
        out[lo : lo + _CHUNK] = ((squares - 2 * cross) / (n_positions - lags)).sum(axis=1)
    return np.clip(out, 0, None)  # round-off can leave -1e-20 where the MSD is ~0


def tea_msd(displacements, max_lag: int | None = None, start: int = 0) -> np.ndarray:
    """Time- and ensemble-averaged MSD (paper eq. A5): the mean TA-MSD, ``(max_lag,)``."""
    return ta_msd(displacements, max_lag, start).mean(axis=0)


def ensemble_msd(displacements) -> np.ndarray:
    """Ensemble-averaged MSD <|x(t) - x(0)|^2> at t = 1 .. L, ``(L,)``."""
    x = positions(displacements)
    return (x[..., 1:] ** 2).sum(axis=1).mean(axis=0)


def fit_power_law(lags, msd, dim: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fit of log MSD = log(2 dim D) + alpha log(lag) along the last axis.

    ``lags``: ``(k,)`` or any shape broadcastable with ``msd`` (``(k,)``, ``(n, k)``, ...).
    Returns ``(alpha, D)`` with the shape of ``msd`` without its last axis. Non-positive MSD
    values give NaN.
    """
    log_lag = np.log(np.asarray(lags, dtype=np.float64))
    if log_lag.shape[-1] < 2:
        raise ValueError("a power-law fit needs at least two lags")
    with np.errstate(divide="ignore", invalid="ignore"):
        log_msd = np.log(np.where(np.asarray(msd) > 0, msd, np.nan))
    centred = log_lag - log_lag.mean(axis=-1, keepdims=True)
    alpha = (centred * log_msd).sum(axis=-1) / (centred**2).sum(axis=-1)
    intercept = log_msd.mean(axis=-1) - alpha * log_lag.mean(axis=-1)
    return alpha, np.exp(intercept) / (2 * dim)


CLASSICAL_LAGS = (1, 9)
"""Lags of the TA-MSD fit the paper compares the latents with (first, last, inclusive)."""


def default_lag_window(n_positions: int) -> tuple[int, int]:
    """The usual fitting window: lags 1 .. 10 % of the trajectory length (at least 1 .. 2)."""
    return 1, max(2, int(0.1 * n_positions))


def estimate_alpha_D(
    displacements, lags: tuple[int, int] | None = None, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Anomalous exponent and D of each trajectory from a fit of its TA-MSD over the lags
    ``lags = (first, last)`` (inclusive; default :func:`default_lag_window`). ``(n,)`` each."""
    dx = _as_displacements(displacements)
    first, last = lags or default_lag_window(dx.shape[-1] + 1 - start)
    if not 1 <= first < last:
        raise ValueError(f"lag window must satisfy 1 <= first < last, got ({first}, {last})")
    msd = ta_msd(dx, last, start)[:, first - 1 :]
    return fit_power_law(np.arange(first, last + 1), msd, dim=dx.shape[1])


def sliding_alpha(lags, msd, width: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Local exponent from fits over sliding windows of ``width`` consecutive lags (Fig. 3b).

    ``lags``: ``(k,)``; ``msd``: ``(k,)`` or ``(n, k)``. Returns the geometric centre lag of
    each window, ``(k - width + 1,)``, and the fitted alpha, ``(..., k - width + 1)``.
    """
    lags = np.asarray(lags, dtype=np.float64)
    msd = np.asarray(msd)
    windows = np.lib.stride_tricks.sliding_window_view(np.arange(lags.size), width)
    alpha, _ = fit_power_law(lags[windows], msd[..., windows])
    centres = np.exp(np.log(lags[windows]).mean(axis=1))
    return centres, alpha


def aging_tea_msd(displacements, lag: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """TEA-MSD at a fixed ``lag`` as a function of the measurement time t_m: the mean over
    trajectories of the TA-MSD of positions 0 .. t_m, for t_m = lag .. L.

    For SBM it ages as 2 D lag t_m^(alpha - 1), which is how the exponent of a weakly
    non-ergodic process is read off time averages (:func:`aging_alpha`). Returns
    ``(t_m, tea_msd)``, each ``(L - lag + 1,)``.
    """
    x = positions(displacements)
    n_positions = x.shape[-1]
    if not 1 <= lag < n_positions:
        raise ValueError(f"lag must be in [1, {n_positions - 1}], got {lag}")
    squares = ((x[..., lag:] - x[..., :-lag]) ** 2).sum(axis=1).mean(axis=0)  # (T - lag,)
    counts = np.arange(1, squares.size + 1)
    return counts + lag - 1, np.cumsum(squares) / counts


def aging_alpha(displacements, lag: int = 2, fraction: float = 0.55) -> float:
    """Exponent of an ensemble from the ageing of its TEA-MSD: 1 + the log-log slope of
    :func:`aging_tea_msd` over the last ``fraction`` of the trajectory (the paper's SBM
    estimate of Fig. 3c: last 55 %, lag 2). For SBM of T = 400 the expected estimate is
    within 0.04 of alpha for alpha in [0.1, 2] (finite-time bias, largest at small alpha)."""
    t_m, tea = aging_tea_msd(displacements, lag)
    keep = t_m >= (1 - fraction) * t_m[-1]
    slope, _ = fit_power_law(t_m[keep], tea[keep])
    return float(1 + slope)


def displacement_autocorrelation(displacements, max_lag: int, normalize: bool = True) -> np.ndarray:
    """<dx(t) dx(t + k)> for k = 0 .. ``max_lag``, averaged over time, trajectories and
    components, ``(max_lag + 1,)``; divided by the k = 0 value when ``normalize`` (the
    paper's C(dt) of Fig. 3a is its absolute value)."""
    dx = _as_displacements(displacements).astype(np.float64)
    n_steps = dx.shape[-1]
    if not 0 <= max_lag < n_steps:
        raise ValueError(f"max_lag must be in [0, {n_steps - 1}], got {max_lag}")
    total = np.zeros(max_lag + 1)
    for lo in range(0, dx.shape[0], _CHUNK):
        total += _lagged_products(dx[lo : lo + _CHUNK], max_lag).sum(axis=(0, 1))
    covariance = total / (dx.shape[0] * dx.shape[1] * (n_steps - np.arange(max_lag + 1)))
    return covariance / covariance[0] if normalize else covariance


def diffusion_coefficient_t(displacements) -> np.ndarray:
    """D(t) = Var(dx(t)) / 2 across the ensemble, averaged over components, ``(L,)``.

    For SBM this is D ((t+1)^alpha - t^alpha) ~ alpha D t^(alpha - 1) (Fig. 3d)."""
    dx = _as_displacements(displacements).astype(np.float64)
    if dx.shape[0] < 2:
        raise ValueError("D(t) needs at least two trajectories")
    return dx.var(axis=0, ddof=1).mean(axis=0) / 2


def bayes_estimate(
    displacements,
    process: str,
    alpha_range: tuple[float, float],
    D_range: tuple[float, float],
    *,
    start: int = 0,
    n_alpha: int = 41,
    n_log10_D: int = 151,
    progress: bool = False,
    noise=0.0,
    exposure=0.0,
    reduced_noise=None,
) -> tuple[np.ndarray, np.ndarray]:
    """The best possible estimate of alpha and log10 D of each trajectory: the posterior mean
    under a uniform prior on ``alpha_range`` x ``log10(D_range)`` (a grid of ``n_alpha`` x
    ``n_log10_D`` points) and the exact likelihood of steps ``start .. L-1`` given all earlier
    ones (:func:`minrep.processes.innovations`). No estimator from those steps has a smaller
    mean squared error on data drawn from that prior. ``(n,)`` each; alpha is 1 for BM.

    With ``start`` equal to a model's receptive field it uses exactly the steps that model's
    decoder predicts, given the earlier ones: for independent steps (BM, SBM) the ceiling of
    what its latents can learn about alpha and D (docs/REPRODUCTION.md gives the argument).

    ``noise`` and ``exposure`` (scalars or ``(n,)``, known) are the measurement of
    :func:`minrep.processes.simulate`; with them the likelihood stays exact, at the cost of one
    generalised eigendecomposition per alpha on the grid and distinct exposure.
    ``reduced_noise`` r (instead of ``noise``; scalar or ``(n,)``) gives the error as known
    relative to the motion in a frame, sigma^2 = 2 r D at every D of the grid: the best
    possible estimate for tracks drawn with ``--reduced-noise``, whose sigma grows with D (an
    absolute sigma there would hide from the estimate what it says about D).
    """
    from minrep import processes  # stats stays importable without the simulators

    dx = _as_displacements(displacements)
    n, dim, length = dx.shape
    alphas = np.array([1.0]) if process == "bm" else np.linspace(*alpha_range, n_alpha)
    log10_d = np.linspace(np.log10(D_range[0]), np.log10(D_range[1]), n_log10_D)
    relative = reduced_noise is not None
    if relative and np.any(np.asarray(noise) != 0):
        raise ValueError("give noise or reduced_noise, not both")
    noise, exposure = processes.check_measurement(reduced_noise if relative else noise, exposure, n)
    if (noise > 0).any() or (exposure > 0).any():
        log_evidence, mean_log10_d = _measured_evidence(
            dx, process, alphas, log10_d, noise, exposure, start, progress, relative
        )
        return _posterior_means(alphas, log_evidence, mean_log10_d)
    d = 10.0**log10_d
    n_obs = dim * (length - start)
    log_evidence = np.empty((n, len(alphas)))
    mean_log10_d = np.empty((n, len(alphas)))
    steps = bar(alphas, desc="Bayes estimate", enabled=progress, nested=True, unit="alpha")
    for i, a in enumerate(steps):
        for lo in range(0, n, _CHUNK):
            # float32 errors: the log-likelihood is then off by ~1e-5 x chi2 (a few 1e-3 nat),
            # far below the posterior's width, and the FBM whitening costs half.
            chunk = dx[lo : lo + _CHUNK]
            errors, v = processes.innovations(chunk, process, a, start, dtype=np.float32)
            chi2 = np.einsum("ndt,t->n", errors.astype(np.float64) ** 2, 1 / v)
            # log p(x | alpha, D) up to a constant, on the D grid: (chunk, n_log10_D)
            log_p = -0.5 * (chi2[:, None] / d + n_obs * np.log(d) + dim * np.log(v).sum())
            peak = log_p.max(axis=1, keepdims=True)
            weight = np.exp(log_p - peak)
            total = weight.sum(axis=1)
            log_evidence[lo : lo + _CHUNK, i] = peak[:, 0] + np.log(total)
            mean_log10_d[lo : lo + _CHUNK, i] = weight @ log10_d / total
    return _posterior_means(alphas, log_evidence, mean_log10_d)


def bayes_estimate_measurement_unknown(
    displacements,
    process: str,
    alpha_range: tuple[float, float],
    D_range: tuple[float, float],
    *,
    reduced_noise_range: tuple[float, float] = (0.0, 1.0),
    exposure_range: tuple[float, float] = (0.0, 1.0),
    n_reduced_noise: int = 11,
    n_exposure: int = 6,
    n_alpha: int = 41,
    n_log10_D: int = 151,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bayes_estimate` for tracks whose localisation error and exposure are not known:
    the posterior mean of alpha and log10 D with the reduced error r (sigma^2 = 2 r D) and the
    exposure marginalised under uniform priors on their ranges (grids of ``n_reduced_noise`` x
    ``n_exposure`` points). The best possible estimate of an estimator that must find the
    measurement itself, as a model's latents must. ``(n,)`` each; costs ``n_reduced_noise`` x
    ``n_exposure`` times a measured :func:`bayes_estimate`."""
    dx = _as_displacements(displacements)
    n = dx.shape[0]
    alphas = np.array([1.0]) if process == "bm" else np.linspace(*alpha_range, n_alpha)
    log10_d = np.linspace(np.log10(D_range[0]), np.log10(D_range[1]), n_log10_D)
    evidence, mean_log10_d = [], []  # per (r, f): (n, n_alpha) each
    for r in np.linspace(*reduced_noise_range, n_reduced_noise):
        for f in np.linspace(*exposure_range, n_exposure):
            # r = 0 as a tiny r: the relative form needs sigma^2 = 2 r D > 0 to take this path
            e, m = _measured_evidence(
                dx, process, alphas, log10_d, np.full(n, max(r, 1e-12)), np.full(n, f), 0,
                False, True,
            )  # fmt: skip
            evidence.append(e)
            mean_log10_d.append(m)
    evidence, mean_log10_d = np.stack(evidence), np.stack(mean_log10_d)
    per_alpha = scipy.special.logsumexp(evidence, axis=0)  # (n, n_alpha)
    given_alpha = (np.exp(evidence - per_alpha[None]) * mean_log10_d).sum(axis=0)
    return _posterior_means(alphas, per_alpha, given_alpha)


def _posterior_means(alphas, log_evidence, mean_log10_d) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means of alpha and log10 D from the evidence of each alpha on the grid and
    the posterior mean of log10 D given it, (n, n_alpha) each."""
    posterior_alpha = np.exp(log_evidence - log_evidence.max(axis=1, keepdims=True))
    posterior_alpha /= posterior_alpha.sum(axis=1, keepdims=True)
    return posterior_alpha @ alphas, (posterior_alpha * mean_log10_d).sum(axis=1)


_MEASURED_CHUNK = 64  # trajectories at a time: (chunk, n_log10_D, L) floats, ~30 MB at L = 400


def _measured_evidence(dx, process, alphas, log10_d, noise, exposure, start, progress, relative):
    """:func:`bayes_estimate`'s log evidence and posterior mean of log10 D per alpha with
    localisation noise and blur. The covariance D A + sigma^2 N (A the process's at D = 1 and
    exposure f, N the noise's) is diagonal, D lambda + sigma^2, in the basis V of the
    generalised eigenproblem A v = lambda N v: each (alpha, f) costs one decomposition, each
    (trajectory, D) O(L). Steps from ``start`` on are conditioned on the earlier ones by
    subtracting the log-likelihood of those. With ``relative``, ``noise`` holds the reduced
    error r: sigma^2 = 2 r D."""
    from minrep import processes

    n, dim, length = dx.shape
    d = 10.0**log10_d
    log_evidence = np.empty((n, len(alphas)))
    mean_log10_d = np.empty((n, len(alphas)))
    blocks = [length] if start == 0 else [length, start]
    steps = bar(alphas, desc="Bayes estimate", enabled=progress, nested=True, unit="alpha")
    for i, a in enumerate(steps):
        for f in np.unique(exposure):
            rows = np.flatnonzero(exposure == f)
            bases = []
            for size in blocks:
                cov = processes.displacement_covariance(process, a, size, exposure=f)
                bases.append(scipy.linalg.eigh(cov, processes.noise_covariance(size)))
            for lo in range(0, rows.size, _MEASURED_CHUNK):
                chunk = rows[lo : lo + _MEASURED_CHUNK]
                # sigma^2 per trajectory, or per trajectory and D: (m, 1 or n_D, 1)
                sigma2 = (
                    2 * noise[chunk, None, None] * d[None, :, None]
                    if relative
                    else noise[chunk, None, None] ** 2
                )
                log_p = 0.0
                for sign, size, (lam, vectors) in zip((1, -1), blocks, bases, strict=False):
                    y2 = ((dx[chunk, :, :size] @ vectors) ** 2).sum(axis=1)  # (m, size)
                    # (m, n_D, size) in float32, 1.7x faster: the log-likelihood is then off
                    # by up to ~5e-4 nat at 400 steps, far below the posterior's width.
                    scaled = (d[:, None] * lam[None, :]).astype(np.float32)
                    var = scaled[None] + sigma2.astype(np.float32)
                    chi2 = np.einsum("mdl,ml->md", 1 / var, y2.astype(np.float32))
                    log_det = np.log(var).sum(-1)
                    log_p = log_p - sign * 0.5 * (
                        chi2.astype(np.float64) + dim * log_det.astype(np.float64)
                    )
                peak = log_p.max(axis=1, keepdims=True)
                weight = np.exp(log_p - peak)
                total = weight.sum(axis=1)
                log_evidence[chunk, i] = peak[:, 0] + np.log(total)
                mean_log10_d[chunk, i] = weight @ log10_d / total
    return log_evidence, mean_log10_d
