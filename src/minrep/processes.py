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


def fgn_autocovariance(alpha: float, lags, D: float = 1.0) -> np.ndarray:
    """Autocovariance of FBM displacements (fractional Gaussian noise) at integer ``lags``.

    Cov(dx[t], dx[t+k]) = D (|k+1|^alpha - 2|k|^alpha + |k-1|^alpha); 2D at k = 0.
    """
    k = np.abs(np.asarray(lags, dtype=np.float64))
    return D * (np.abs(k + 1) ** alpha - 2 * k**alpha + np.abs(k - 1) ** alpha)


def sbm_variance(alpha: float, n_steps: int, D: float = 1.0) -> np.ndarray:
    """Var(dx[t]) = 2D ((t+1)^alpha - t^alpha) of SBM displacements t = 0 .. n_steps-1."""
    t = np.arange(n_steps + 1, dtype=np.float64) ** alpha
    return 2 * D * np.diff(t)


def _circulant_sqrt_eigenvalues(alpha: float, n_steps: int) -> np.ndarray | None:
    """sqrt(lambda / M) of the Davies-Harte embedding of unit-D fGn, or None if not PSD."""
    # Embedding of size M = 2 n_steps: first row gamma(0..n), gamma(n-1..1).
    gamma = fgn_autocovariance(alpha, np.arange(n_steps + 1))
    row = np.concatenate([gamma, gamma[-2:0:-1]])
    eigenvalues = scipy.fft.rfft(row).real  # the row is symmetric: its spectrum is real
    if eigenvalues.min() < -1e-10 * eigenvalues.max():
        return None
    # Round-off negatives of order 1e-16 are set to 0.
    return np.sqrt(np.clip(eigenvalues, 0, None) / row.size)


def _fgn(alpha: float, n_series: int, n_steps: int, rng, dtype) -> np.ndarray:
    """``n_series`` unit-D fGn series of ``n_steps``, shape ``(n_series, n_steps)``."""
    if n_steps == 1:
        return (math.sqrt(2.0) * rng.standard_normal((n_series, 1), dtype=dtype)).astype(dtype)
    sqrt_eig = _circulant_sqrt_eigenvalues(alpha, n_steps)
    if sqrt_eig is None:  # exact fall-back: Cholesky factor of the Toeplitz covariance
        cov = scipy.linalg.toeplitz(fgn_autocovariance(alpha, np.arange(n_steps)))
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
) -> np.ndarray:
    """Exact displacements of BM, FBM or SBM, shape ``(n, dim, n_steps)``.

    ``alpha`` and ``D`` are scalars or arrays of shape ``(n,)`` (``alpha`` is ignored for BM).
    FBM uses circulant embedding (Davies-Harte), falling back to a Cholesky factor of the
    covariance where the embedding is not positive. The same seed gives the same bytes.
    """
    check_process(process, PROCESSES)
    if n_steps < 1 or dim < 1:
        raise SimulationError(f"need n_steps >= 1 and dim >= 1, got {n_steps} and {dim}")
    alpha, D = check_parameters(process, alpha if process != "bm" else 1.0, D, n)
    n = alpha.size
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim, n_steps), dtype=dtype)
    scale = np.sqrt(D).astype(dtype)[:, None, None]
    if process == "bm":
        out[:] = rng.standard_normal(out.shape, dtype=dtype) * (math.sqrt(2.0) * scale)
        return out
    if process == "sbm":
        for a in bar(np.unique(alpha), desc="simulate sbm", enabled=progress, unit="alpha"):
            idx = np.flatnonzero(alpha == a)
            std = np.sqrt(sbm_variance(a, n_steps)).astype(dtype)
            noise = rng.standard_normal((idx.size, dim, n_steps), dtype=dtype)
            out[idx] = noise * std * scale[idx]
        return out
    for a in bar(np.unique(alpha), desc="simulate fbm", enabled=progress, unit="alpha"):
        idx = np.flatnonzero(alpha == a)
        series = _fgn(a, idx.size * dim, n_steps, rng, dtype)
        out[idx] = series.reshape(idx.size, dim, n_steps) * scale[idx]
    return out


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
) -> np.ndarray:
    """Negative log-likelihood of each trajectory under its true process and parameters.

    ``displacements`` has shape ``(n, dim, L)``; ``alpha``, ``D`` are scalars or ``(n,)``.
    Returns, shape ``(n,)``, the mean NLL in nats per displacement component of steps
    ``start .. L-1``, each conditioned exactly on all previous displacements
    (``memory=None``) or on the last ``memory`` ones (Durbin-Levinson for FBM; BM and SBM
    steps are independent, so ``memory`` changes nothing there). No model can beat this in
    expectation; with ``memory`` equal to a model's receptive field it is the best that model
    can reach.
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
    nll = np.empty(n)
    d = D[:, None, None]
    for a in bar(np.unique(alpha), desc="exact NLL", enabled=progress, unit="alpha"):
        idx = np.flatnonzero(alpha == a)
        errors, v = innovations(x[idx], process, a, start, memory)
        var = v * d[idx]
        nll[idx] = _gaussian_nll(errors**2 / var, var).mean(axis=(1, 2))
    return nll


def expected_exact_nll(
    process: str, alpha, D, n_steps: int, start: int = 32, memory: int | None = None
) -> np.ndarray:
    """The expectation of :func:`exact_nll` (the conditional entropy per displacement), ``(n,)``.

    For a Gaussian step with conditional variance v the expected NLL is 0.5 log(2 pi e v).
    """
    check_process(process, PROCESSES)
    alpha, D = check_parameters(process, alpha if process != "bm" else 1.0, D)
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
