"""Physics: exact simulators of BM, FBM and SBM, their covariances, and the exact likelihood.

Conventions, stated once here and used everywhere in minrep. Time is in steps (dt = 1); a
trajectory of T positions x[0..T-1] has L = T - 1 displacements dx[t] = x[t+1] - x[t],
t = 0 .. L-1. Arrays of displacements have shape ``(n, dim, L)``; in ``dim`` dimensions the
components are independent copies of the 1D process.

- BM, diffusion coefficient D: dx[t] i.i.d. N(0, 2D).
- FBM, anomalous exponent alpha in (0, 2), generalised diffusion coefficient D: stationary
  Gaussian increments (fractional Gaussian noise) with Var(dx) = 2D for every alpha and
  Cov(dx[t], dx[t+k]) = D (|k+1|^alpha - 2|k|^alpha + |k-1|^alpha), so MSD(t) = 2 D t^alpha.
- SBM, alpha > 0 and D: independent Gaussian increments with MSD(t) = 2 D t^alpha, so the
  displacement dx[t] (step t+1, ending at time t+1) has Var = 2D ((t+1)^alpha - t^alpha).

All MSD formulas are per component; in ``dim`` dimensions the MSD is ``dim`` times larger.

The measurement, as a camera records it (``exposure`` f and ``noise`` sigma, per trajectory):
the observed position of frame k is the average of the true one over the exposure window
[k, k + f] (motion blur; f = 0 is an instantaneous snapshot, f = 1 a shutter open all frame
long) plus a static localisation error N(0, sigma^2) per coordinate, independent between
frames. Observed displacements stay Gaussian: for FBM and BM they stay stationary, with
Cov(dy[t], dy[t+k]) = D (W(k+1) - 2 W(k) + W(k-1)) + sigma^2 (2 [k = 0] - [|k| = 1]), where
W(u) = (G(u+f) - 2 G(u) + G(u-f)) / f^2 is |u|^alpha averaged over two windows and
G(v) = |v|^(alpha+2) / ((alpha+1) (alpha+2)). For BM at f = 1 this gives Var(dy) = 4D/3 and a
lag-1 covariance D/3 (Savin and Doyle 2005; Berglund 2010).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.fft
import scipy.linalg

from minrep import MinrepError
from minrep.progress import bar

PROCESSES = ("bm", "fbm", "sbm")
"""Processes simulated exactly by minrep itself."""

ANDI_ONLY_PROCESSES = ("ctrw", "lw", "attm")
"""Further processes available through the optional andi-datasets backend."""

# Exponents each process admits (closed bounds where the process is defined at the bound).
ALPHA_RANGE = {
    "bm": (1.0, 1.0),
    "fbm": (0.0, 2.0),  # open interval: alpha = 0 and 2 are degenerate
    "sbm": (0.0, math.inf),
    "ctrw": (0.0, 1.0),
    "lw": (1.0, 2.0),
    "attm": (0.0, 1.0),
}


class SimulationError(MinrepError, ValueError):
    """Invalid simulation request (unknown process, parameter out of range, ...)."""


# ---------------------------------------------------------------------------------------------
# Exact simulation


def fgn_autocovariance(alpha: float, lags, D: float = 1.0, exposure: float = 0.0) -> np.ndarray:
    """Autocovariance of FBM displacements (fractional Gaussian noise) at integer ``lags``.

    Cov(dx[t], dx[t+k]) = D (|k+1|^alpha - 2|k|^alpha + |k-1|^alpha); 2D at k = 0. With
    ``exposure`` f > 0, of the motion-blurred displacements (the module docstring): |u|^alpha
    becomes its average W(u) over two exposure windows.
    """
    k = np.abs(np.asarray(lags, dtype=np.float64))
    if exposure == 0:
        return D * (np.abs(k + 1) ** alpha - 2 * k**alpha + np.abs(k - 1) ** alpha)
    w = _window_average(alpha, exposure)
    return D * (w(k + 1) - 2 * w(k) + w(np.abs(k - 1)))


def fbm_msd(alpha: float, lags, D: float = 1.0, noise: float = 0.0, exposure: float = 0.0):
    """Mean squared displacement per coordinate of observed FBM at integer ``lags`` (k,):
    2 D t^alpha, and with a measurement (the module docstring) that of the recorded positions.
    The displacements stay stationary, so MSD(t) = t gamma(0) + 2 sum_{k<t} (t - k) gamma(k)
    (gamma: :func:`fgn_autocovariance` with the exposure), plus 2 noise^2 from the two ends."""
    given = np.asarray(lags)
    lags = given.astype(np.int64)
    if lags.size == 0 or (lags != given).any() or (lags < 1).any():
        raise ValueError(f"lags must be whole numbers >= 1, got {given}")
    gamma = fgn_autocovariance(alpha, np.arange(lags.max()), D, exposure)
    k = np.arange(gamma.size)
    # S1(t) = sum_{1 <= k < t} gamma(k), S2(t) = the same weighted by k; index t - 1
    s1 = np.concatenate([[0.0], np.cumsum(gamma[1:])])
    s2 = np.concatenate([[0.0], np.cumsum(k[1:] * gamma[1:])])
    t = lags.astype(np.float64)
    return t * gamma[0] + 2 * (t * s1[lags - 1] - s2[lags - 1]) + 2 * noise**2


def _window_average(alpha: float, f: float):
    """u -> W(u) = (1/f^2) int_0^f int_0^f |u + t - s|^alpha ds dt for integer u >= 0 (arrays).

    The closed form (G(u+f) - 2 G(u) + G(u-f)) / f^2 loses (u/f)^2 of its digits to
    cancellation; for u >= 2f its Taylor series in f, sum over m >= 1 of
    2 f^(2m-2) / (2m)! G^(2m)(u), whose terms fall at least 4-fold each, is used instead."""
    beta = alpha + 2
    norm = (alpha + 1) * (alpha + 2)

    def closed(u):
        g = lambda v: np.abs(v) ** beta / norm  # noqa: E731
        return (g(u + f) - 2 * g(u) + g(u - f)) / f**2

    def series(u):
        total = np.zeros_like(u)
        falling = 1.0  # beta (beta - 1) ... (beta - 2m + 1)
        for m in range(1, 40):
            falling *= (beta - 2 * m + 2) * (beta - 2 * m + 1)
            total += 2 * f ** (2 * m - 2) / math.factorial(2 * m) * falling * u ** (beta - 2 * m)
            if falling == 0:
                break
        return total / norm

    def w(u):
        u = np.asarray(u, dtype=np.float64)
        far = u >= 2 * f
        out = np.empty_like(u)
        out[far] = series(u[far])
        out[~far] = closed(u[~far])
        return out

    return w


def _sbm_blurred_covariance(alpha: float, n_steps: int, f: float) -> np.ndarray:
    """Covariance (n_steps, n_steps) at D = 1 of the displacements of SBM positions averaged
    over [k, k + f] (f in (0, 1]): from the covariance 2 min(s, t)^alpha of the positions,
    integrated over two windows (disjoint for different frames)."""
    _, mean_power, same = _sbm_window_moments(alpha, n_steps, f)
    frames = np.arange(n_steps + 1)
    # Frames j < k: 2 (1/f) int_j^{j+f} s^alpha ds (min(s, t) = s, the earlier window's).
    positions = 2 * mean_power[np.minimum.outer(frames, frames)]
    positions[np.diag_indices_from(positions)] = 2 * same
    return _difference_covariance(positions)


def _sbm_window_moments(alpha: float, n_steps: int, f: float):
    """For frames k = 0 .. n_steps: k^alpha, its mean (1/f) int_k^{k+f} s^alpha ds over the
    window, and (1/f^2) int int min(s, t)^alpha over the window twice,
    = (2/f^2) int_k^{k+f} s^alpha (k + f - s) ds."""
    k = np.arange(n_steps + 1, dtype=np.float64)
    a1, a2 = alpha + 1, alpha + 2
    mean_power = ((k + f) ** a1 - k**a1) / (a1 * f)
    same = 2 / f**2 * ((k + f) * ((k + f) ** a1 - k**a1) / a1 - ((k + f) ** a2 - k**a2) / a2)
    return k**alpha, mean_power, same


def _difference_covariance(positions: np.ndarray) -> np.ndarray:
    """Covariance of the displacements from the covariance of the positions (T, T)."""
    return positions[1:, 1:] - positions[1:, :-1] - positions[:-1, 1:] + positions[:-1, :-1]


def noise_covariance(n_steps: int) -> np.ndarray:
    """Covariance (n_steps, n_steps) of the displacements of a unit localisation error:
    2 on the diagonal, -1 beside it (neighbouring displacements share a frame's error)."""
    return 2 * np.eye(n_steps) - np.eye(n_steps, k=1) - np.eye(n_steps, k=-1)


def displacement_covariance(
    process: str,
    alpha: float,
    n_steps: int,
    D: float = 1.0,
    noise: float = 0.0,
    exposure: float = 0.0,
) -> np.ndarray:
    """Covariance (n_steps, n_steps) of the observed displacements of one component: the
    process with exponent ``alpha`` and coefficient ``D``, seen with motion blur ``exposure``
    (0-1) and localisation error ``noise`` (standard deviation, per coordinate)."""
    check_process(process, PROCESSES)
    check_measurement(noise, exposure)
    alpha = 1.0 if process == "bm" else float(alpha)
    if process == "sbm":
        if exposure == 0:
            cov = np.diag(sbm_variance(alpha, n_steps))
        else:
            cov = _sbm_blurred_covariance(alpha, n_steps, exposure)
    else:
        cov = scipy.linalg.toeplitz(fgn_autocovariance(alpha, np.arange(n_steps), 1.0, exposure))
    return D * cov + noise**2 * noise_covariance(n_steps)


def sbm_variance(alpha: float, n_steps: int, D: float = 1.0) -> np.ndarray:
    """Var(dx[t]) = 2D ((t+1)^alpha - t^alpha) of SBM displacements t = 0 .. n_steps-1."""
    t = np.arange(n_steps + 1, dtype=np.float64) ** alpha
    return 2 * D * np.diff(t)


def _circulant_sqrt_eigenvalues(
    alpha: float, n_steps: int, exposure: float = 0.0
) -> np.ndarray | None:
    """sqrt(lambda / M) of the Davies-Harte embedding of unit-D fGn (motion-blurred with
    ``exposure``), or None if not PSD."""
    # Embedding of size M = 2 n_steps: first row gamma(0..n), gamma(n-1..1).
    gamma = fgn_autocovariance(alpha, np.arange(n_steps + 1), 1.0, exposure)
    row = np.concatenate([gamma, gamma[-2:0:-1]])
    eigenvalues = scipy.fft.rfft(row).real  # the row is symmetric: its spectrum is real
    if eigenvalues.min() < -1e-10 * eigenvalues.max():
        return None
    # Round-off negatives of order 1e-16 are set to 0.
    return np.sqrt(np.clip(eigenvalues, 0, None) / row.size)


def _fgn(
    alpha: float, n_series: int, n_steps: int, rng, dtype, exposure: float = 0.0
) -> np.ndarray:
    """``n_series`` unit-D fGn series of ``n_steps`` (motion-blurred with ``exposure``), shape
    ``(n_series, n_steps)``."""
    if n_steps == 1:
        std = math.sqrt(fgn_autocovariance(alpha, [0], 1.0, exposure)[0])
        return (std * rng.standard_normal((n_series, 1), dtype=dtype)).astype(dtype)
    sqrt_eig = _circulant_sqrt_eigenvalues(alpha, n_steps, exposure)
    if sqrt_eig is None:  # exact fall-back: Cholesky factor of the Toeplitz covariance
        gamma = fgn_autocovariance(alpha, np.arange(n_steps), 1.0, exposure)
        cov = scipy.linalg.toeplitz(gamma)
        lower = np.linalg.cholesky(cov)
        return (rng.standard_normal((n_series, n_steps)) @ lower.T).astype(dtype)
    m = 2 * n_steps
    # Full Hermitian spectrum; the real and imaginary parts of one complex FFT are two
    # independent exact samples, so each complex draw gives two series.
    sqrt_full = np.concatenate([sqrt_eig, sqrt_eig[-2:0:-1]]).astype(dtype)
    n_complex = (n_series + 1) // 2
    noise = rng.standard_normal((n_complex, 2, m), dtype=dtype)
    w = (noise[:, 0] + 1j * noise[:, 1]) * sqrt_full
    y = scipy.fft.fft(w, axis=-1, workers=-1)[:, :n_steps]
    out = np.concatenate([y.real, y.imag], axis=0)[:n_series]
    return np.ascontiguousarray(out, dtype=dtype)


def _blurred_sbm(alpha: float, f: float, n_series: int, n_steps: int, rng, dtype) -> np.ndarray:
    """``n_series`` unit-D SBM displacement series of positions averaged over [k, k + f].

    With independent increments, frame k's step inc_k = x(k+1) - x(k) and blur offset
    A_k = (1/f) int_k^{k+f} (x(s) - x(k)) ds form a Gaussian pair independent of every other
    frame's, and the observed step is inc_k + A_{k+1} - A_k: exact, O(n_steps)."""
    power, mean_power, same = _sbm_window_moments(alpha, n_steps, f)
    var_step = 2 * ((np.arange(n_steps + 1) + 1.0) ** alpha - power)
    cov_step_offset = 2 * (mean_power - power)
    var_offset = 2 * (same - power)
    # Cholesky factor of [[var_step, cov], [cov, var_offset]], frame by frame.
    l11 = np.sqrt(var_step)
    l21 = cov_step_offset / l11
    l22 = np.sqrt(np.clip(var_offset - l21**2, 0, None))
    noise = rng.standard_normal((2, n_series, n_steps + 1))
    step = l11 * noise[0]
    offset = l21 * noise[0] + l22 * noise[1]
    return (step[:, :-1] + offset[:, 1:] - offset[:, :-1]).astype(dtype)


def check_process(process: str, allowed: Sequence[str] = PROCESSES) -> None:
    """Raise a :class:`SimulationError` naming the choices unless ``process`` is ``allowed``."""
    if process in ANDI_ONLY_PROCESSES and process not in allowed:
        raise SimulationError(
            f"{process} is simulated by andi-datasets only: use backend 'andi' (--backend andi)"
        )
    if process not in allowed:
        raise SimulationError(f"unknown process {process!r}; choose one of {', '.join(allowed)}")


def admits_alpha(process: str, alpha: float) -> bool:
    """Whether ``process`` is defined (and not degenerate) at exponent ``alpha``."""
    low, high = ALPHA_RANGE[process]
    if process == "fbm":
        return low < alpha < high
    if process == "sbm":
        return alpha > low
    if process in ("ctrw", "attm"):  # alpha = 0 is degenerate (andi's ATTM loops forever)
        return low < alpha <= high
    return low <= alpha <= high


def check_parameters(process: str, alpha, D, n: int | None = None):
    """Broadcast ``alpha`` and ``D`` to shape ``(n,)`` float64 and check their ranges."""
    alpha = np.asarray(1.0 if alpha is None and process == "bm" else alpha, dtype=np.float64)
    D = np.asarray(D, dtype=np.float64)
    if n is None:
        n = max(alpha.size, D.size)
    try:
        alpha, D = np.broadcast_to(alpha, (n,)).copy(), np.broadcast_to(D, (n,)).copy()
    except ValueError:
        raise SimulationError(
            f"alpha (shape {alpha.shape}) and D (shape {D.shape}) must be scalars or have one "
            f"value per trajectory ({n})"
        ) from None
    bad_d = ~(np.isfinite(D) & (D > 0))
    if bad_d.any():
        i = int(np.flatnonzero(bad_d)[0])
        raise SimulationError(f"D must be finite and > 0; trajectory {i} has D = {D[i]}")
    ok = np.array([admits_alpha(process, a) for a in np.unique(alpha)]) if n else np.array([])
    if not ok.all():
        bad = np.unique(alpha)[~ok][0]
        low, high = ALPHA_RANGE[process]
        raise SimulationError(f"alpha = {bad} is outside the range of {process} ({low}, {high})")
    return alpha, D


def check_measurement(noise, exposure, n: int | None = None):
    """Broadcast the localisation error ``noise`` (>= 0) and the ``exposure`` fraction (0-1)
    to shape ``(n,)`` float64 (scalars stay scalars when ``n`` is None), or raise a
    :class:`SimulationError` naming the bad value."""
    noise = np.asarray(noise, dtype=np.float64)
    exposure = np.asarray(exposure, dtype=np.float64)
    for name, values, ok, what in (
        ("noise", noise, lambda v: v >= 0, "finite and >= 0 (a standard deviation)"),
        ("exposure", exposure, lambda v: (v >= 0) & (v <= 1), "in [0, 1] (a frame fraction)"),
    ):
        bad = ~(np.isfinite(values) & ok(values))
        if not bad.any():
            continue
        if values.ndim == 0:
            raise SimulationError(f"{name} must be {what}, got {float(values)}")
        i = int(np.flatnonzero(bad.ravel())[0])
        raise SimulationError(f"{name} must be {what}; trajectory {i} has {values.ravel()[i]}")
    if n is None:
        return noise, exposure
    try:
        return np.broadcast_to(noise, (n,)).copy(), np.broadcast_to(exposure, (n,)).copy()
    except ValueError:
        raise SimulationError(
            f"noise (shape {noise.shape}) and exposure (shape {exposure.shape}) must be "
            f"scalars or have one value per trajectory ({n})"
        ) from None


def simulate(
    process: str,
    alpha,
    D,
    n_steps: int,
    n: int | None = None,
    dim: int = 1,
    seed: int | np.random.Generator | None = None,
    dtype=np.float32,
    progress: bool = False,
    noise=0.0,
    exposure=0.0,
) -> np.ndarray:
    """Exact displacements of BM, FBM or SBM, shape ``(n, dim, n_steps)``.

    ``alpha``, ``D``, ``noise`` (localisation error, standard deviation per coordinate, in
    the units of the positions) and ``exposure`` (motion blur, 0-1 of a frame) are scalars or
    arrays of shape ``(n,)`` (``alpha`` is ignored for BM); the measurement model is in the
    module docstring. FBM (and blurred BM) uses circulant embedding (Davies-Harte), falling
    back to a Cholesky factor of the covariance where the embedding is not positive. The same
    seed gives the same bytes, and without noise and blur the bytes of earlier versions.
    """
    check_process(process, PROCESSES)
    if n_steps < 1 or dim < 1:
        raise SimulationError(f"need n_steps >= 1 and dim >= 1, got {n_steps} and {dim}")
    alpha, D = check_parameters(process, alpha if process != "bm" else 1.0, D, n)
    n = alpha.size
    noise, exposure = check_measurement(noise, exposure, n)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim, n_steps), dtype=dtype)
    scale = np.sqrt(D).astype(dtype)[:, None, None]
    sharp = exposure == 0
    if process == "bm":
        if sharp.all():
            out[:] = rng.standard_normal(out.shape, dtype=dtype) * (math.sqrt(2.0) * scale)
        else:
            _stationary(out, alpha, exposure, rng, dtype, progress, "bm")
            out *= scale
    elif process == "sbm":
        groups = sorted(set(zip(alpha.tolist(), exposure.tolist(), strict=True)))
        for a, f in bar(groups, desc="simulate sbm", enabled=progress, unit="group"):
            idx = np.flatnonzero((alpha == a) & (exposure == f))
            if f == 0:
                std = np.sqrt(sbm_variance(a, n_steps)).astype(dtype)
                series = rng.standard_normal((idx.size, dim, n_steps), dtype=dtype) * std
            else:
                series = _blurred_sbm(a, f, idx.size * dim, n_steps, rng, dtype)
            out[idx] = series.reshape(idx.size, dim, n_steps) * scale[idx]
    else:
        _stationary(out, alpha, exposure, rng, dtype, progress, "fbm")
        out *= scale
    if (noise > 0).any():
        errors = rng.standard_normal((n, dim, n_steps + 1))
        out += (noise[:, None, None] * np.diff(errors, axis=-1)).astype(dtype)
    return out


def _stationary(out, alpha, exposure, rng, dtype, progress, name) -> None:
    """Fill ``out`` (n, dim, L) with unit-D (blurred) fGn, grouped by (alpha, exposure)."""
    n, dim, n_steps = out.shape
    groups = sorted(set(zip(alpha.tolist(), exposure.tolist(), strict=True)))
    for a, f in bar(groups, desc=f"simulate {name}", enabled=progress, unit="group"):
        idx = np.flatnonzero((alpha == a) & (exposure == f))
        series = _fgn(a, idx.size * dim, n_steps, rng, dtype, f)
        out[idx] = series.reshape(idx.size, dim, n_steps)


# ---------------------------------------------------------------------------------------------
# Exact likelihood


def _durbin_levinson(gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-step linear predictors of a stationary Gaussian series with autocovariance ``gamma``.

    Returns ``phi`` (L, L) with ``phi[k, :k]`` the coefficients of the order-k predictor
    (x_t ~ sum_j phi[k, j] x_{t-1-j}) and ``v`` (L,) its prediction variance.
    """
    n = gamma.size
    phi = np.zeros((n, n))
    v = np.empty(n)
    v[0] = gamma[0]
    for k in range(1, n):
        prev = phi[k - 1, : k - 1]
        a = (gamma[k] - prev @ gamma[k - 1 : 0 : -1]) / v[k - 1]
        phi[k, : k - 1] = prev - a * prev[::-1]
        phi[k, k - 1] = a
        v[k] = v[k - 1] * (1 - a * a)
    return phi, v


def _fgn_innovations(alpha: float, n_steps: int, start: int, memory: int | None):
    """Matrix ``A`` (n_steps, n_steps - start) and unit-D variances ``v`` (n_steps - start,)
    such that ``x @ A`` are the prediction errors of steps ``start .. n_steps-1``."""
    phi, v = _durbin_levinson(fgn_autocovariance(alpha, np.arange(n_steps)))
    steps = np.arange(start, n_steps)
    order = steps if memory is None else np.minimum(steps, memory)
    a = np.zeros((n_steps, steps.size))
    for col, (t, k) in enumerate(zip(steps, order, strict=True)):
        a[t, col] = 1.0
        a[t - k : t, col] = -phi[k, :k][::-1]
    return a, v[order]


def _gaussian_nll(err2_over_var: np.ndarray, var: np.ndarray) -> np.ndarray:
    return 0.5 * (np.log(2 * np.pi * var) + err2_over_var)


def innovations(
    displacements: np.ndarray,
    process: str,
    alpha: float,
    start: int = 32,
    memory=None,
    dtype=np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Prediction errors of steps ``start .. L-1`` of ``displacements`` (n, dim, L) under the
    process with exponent ``alpha`` ((n, dim, L - start), in ``dtype``), and their variances at
    D = 1, (L - start,). The law of the steps is N(0, D v) for each error, independently;
    conditioning as in :func:`exact_nll`."""
    x = np.asarray(displacements, dtype=dtype)
    n_steps = x.shape[-1]
    if process == "bm":
        return x[..., start:], np.full(n_steps - start, 2.0)
    if process == "sbm":
        return x[..., start:], sbm_variance(alpha, n_steps)[start:]
    matrix, v = _fgn_innovations(alpha, n_steps, start, memory)
    return x @ matrix.astype(dtype), v


def exact_nll(
    displacements: np.ndarray,
    process: str,
    alpha,
    D,
    start: int = 32,
    memory: int | None = None,
    progress: bool = False,
    noise=0.0,
    exposure=0.0,
) -> np.ndarray:
    """Negative log-likelihood of each trajectory under its true process and parameters.

    ``displacements`` has shape ``(n, dim, L)``; ``alpha``, ``D`` are scalars or ``(n,)``.
    Returns, shape ``(n,)``, the mean NLL in nats per displacement component of steps
    ``start .. L-1``, each conditioned exactly on all previous displacements
    (``memory=None``) or on the last ``memory`` ones (Durbin-Levinson for FBM; BM and SBM
    steps are independent, so ``memory`` changes nothing there). No model can beat this in
    expectation; with ``memory`` equal to a model's receptive field it is the best that model
    can reach. ``noise`` and ``exposure`` (scalars or ``(n,)``) are the measurement of
    :func:`simulate`; with either, every step is conditioned on all earlier ones (the observed
    steps are correlated for every process then: a Cholesky factor per trajectory).
    """
    check_process(process, PROCESSES)
    x = np.asarray(displacements, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"displacements must have shape (n, dim, L), got {x.shape}")
    n, dim, n_steps = x.shape
    if not 0 <= start < n_steps:
        raise ValueError(f"start must be in [0, {n_steps - 1}] for {n_steps} steps, got {start}")
    if memory is not None and memory < 0:
        raise ValueError(f"memory must be >= 0 or None, got {memory}")
    alpha, D = check_parameters(process, alpha if process != "bm" else 1.0, D, n)
    noise, exposure = check_measurement(noise, exposure, n)
    if (noise > 0).any() or (exposure > 0).any():
        if memory is not None:
            raise ValueError(
                "memory applies to the process as it is; with noise or exposure every step is "
                "conditioned on all earlier ones (memory=None)"
            )
        return _measured_nll(x, process, alpha, D, noise, exposure, start, progress)
    nll = np.empty(n)
    d = D[:, None, None]
    for a in bar(np.unique(alpha), desc="exact NLL", enabled=progress, unit="alpha"):
        idx = np.flatnonzero(alpha == a)
        errors, v = innovations(x[idx], process, a, start, memory)
        var = v * d[idx]
        nll[idx] = _gaussian_nll(errors**2 / var, var).mean(axis=(1, 2))
    return nll


class _MeasuredFactors:
    """``(indices, lower)`` per group of trajectories sharing alpha, exposure and
    sigma^2 / D: the Cholesky factor of their covariance at D = 1 (:func:`_measured_nll`).
    Each factor is computed when its group is reached: with noise drawn per trajectory every
    trajectory is a group, and 20,000 factors of 399 steps at once would take 25 GB."""

    def __init__(self, process, alpha, D, noise, exposure, n_steps):
        self.process, self.n_steps = process, n_steps
        ratio = noise**2 / D
        keys = zip(alpha.tolist(), exposure.tolist(), ratio.tolist(), strict=True)
        self.groups = [
            (np.flatnonzero((alpha == a) & (exposure == f) & (ratio == r)), a, f, r)
            for a, f, r in sorted(set(keys))
        ]

    def __len__(self) -> int:
        return len(self.groups)

    def __iter__(self):
        for idx, a, f, r in self.groups:
            cov = displacement_covariance(self.process, a, self.n_steps, 1.0, math.sqrt(r), f)
            yield idx, np.linalg.cholesky(cov)


def _measured_nll(x, process, alpha, D, noise, exposure, start, progress) -> np.ndarray:
    """:func:`exact_nll` with noise or blur: the covariance is D (C_alpha,f + (sigma^2 / D) N),
    so trajectories that share alpha, f and sigma^2 / D share one Cholesky factor, whose
    diagonal holds the conditional standard deviations of the steps."""
    n, dim, n_steps = x.shape
    nll = np.empty(n)
    groups = _MeasuredFactors(process, alpha, D, noise, exposure, n_steps)
    for idx, lower in bar(groups, desc="exact NLL", enabled=progress, unit="group"):
        series = x[idx].reshape(-1, n_steps).T  # (L, m)
        # series = lower @ z with z ~ N(0, D): z[t] is step t's prediction error divided by
        # lower[t, t], whose square is the conditional variance at D = 1.
        z = scipy.linalg.solve_triangular(lower, series, lower=True)[start:]
        var = np.diag(lower)[start:, None] ** 2
        d = np.repeat(D[idx], dim)[None, :]
        per_series = _gaussian_nll(z**2 / d, var * d).mean(axis=0)
        nll[idx] = per_series.reshape(idx.size, dim).mean(axis=1)
    return nll


def expected_exact_nll(
    process: str,
    alpha,
    D,
    n_steps: int,
    start: int = 32,
    memory: int | None = None,
    noise=0.0,
    exposure=0.0,
) -> np.ndarray:
    """The expectation of :func:`exact_nll` (the conditional entropy per displacement), ``(n,)``.

    For a Gaussian step with conditional variance v the expected NLL is 0.5 log(2 pi e v).
    """
    check_process(process, PROCESSES)
    alpha, D = check_parameters(process, alpha if process != "bm" else 1.0, D)
    noise, exposure = check_measurement(noise, exposure, alpha.size)
    if (noise > 0).any() or (exposure > 0).any():
        if memory is not None:
            raise ValueError("with noise or exposure the expectation needs memory=None")
        out = np.empty(alpha.size)
        for idx, lower in _MeasuredFactors(process, alpha, D, noise, exposure, n_steps):
            v = np.diag(lower)[start:] ** 2
            out[idx] = 0.5 * np.mean(np.log(2 * np.pi * np.e * v)) + 0.5 * np.log(D[idx])
        return out
    out = np.empty(alpha.size)
    for a in np.unique(alpha):
        idx = alpha == a
        if process == "bm":
            v = np.full(n_steps - start, 2.0)
        elif process == "sbm":
            v = sbm_variance(a, n_steps)[start:]
        else:
            _, v = _fgn_innovations(a, n_steps, start, memory)
        out[idx] = 0.5 * np.mean(np.log(2 * np.pi * np.e * v)) + 0.5 * np.log(D[idx])
    return out
