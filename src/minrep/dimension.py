"""The effective dimension of a representation: how many directions of latent space carry
information, whatever the number of surviving latents (numpy only, no torch).

A trained encoder gives each trajectory a posterior N(mu, diag(exp(logvar))). Over a data set
the posterior means scatter with the *signal* covariance S = Cov(mu); a single code is blurred
by the *noise* N = the mean over the data of diag(exp(logvar)). The directions v that solve the
generalised eigenproblem S v = lambda N v are the principal directions of the signal measured
in units of the noise: lambda is the signal-to-noise ratio (SNR) along v (the eigenvalues of
N^{-1/2} S N^{-1/2}). A Gaussian channel with SNR lambda carries 0.5 log(1 + lambda) nat, so
the SNRs say how much each direction tells apart, independently of how the directions are
spread over the latents (a rotation of the latents, or two latents that copy one signal,
leaves them unchanged). The effective dimension is the number of SNRs above
:data:`SNR_FACTOR` (0.221: 0.1 nat, the survival threshold of a latent).

Everything is computed from :class:`LatentMoments` (a count and sums over the data), which add
up over batches and over the processes of a data-parallel run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SURVIVAL_KL = 0.1
"""A latent survives when its mean KL to the prior on held-out data exceeds this (nat)."""

SNR_FACTOR = math.exp(2 * SURVIVAL_KL) - 1
"""A direction of latent space is informative when the variance of the posterior means along
it exceeds the posterior noise along it by more than this factor (0.221): when it carries more
than 0.5 log(1 + 0.221) = 0.1 nat per code, for a Gaussian channel, the bar a latent must clear
to survive (:data:`SURVIVAL_KL`), applied to directions instead of latents.

Measured on the shipped models (paper-test set inside the training range), whose parameters
are known (BM 1, FBM 2, SBM 2): the parameter directions have SNRs BM 419; FBM 428 and 34;
SBM 1095 and 0.77, and every other direction at most 0.033. SBM's second direction is weak
per trajectory but a real parameter: it raises the R^2 of a readout of alpha from 0.72 (first
direction alone) to 0.95 and of log10 D from 0.31 to 0.88. A factor of 10 (1.2 nat), which
splits the directions issue 15 reports for a redundant FBM model (SNRs about 160, 35 | 2.5,
0.15), would call the shipped SBM model one-dimensional; 0.221 sits a factor of 3.5 below
SBM's weak parameter and of 7 above the largest collapsed direction. That FBM model's 2.5
direction (signal 0.05 against noise 0.02) then counts as a third dimension: it is a small
one, and it cannot be told from a parameter by second moments alone."""

INFORMATIVE_SHARE = 0.5
"""A surviving latent is counted as a copy of an informative direction when more than this
share of its signal (in units of its own noise) lies in the informative directions; otherwise
it mostly carries noise."""

_TINY = 1e-12


@dataclass
class LatentMoments:
    """Sums over a set of posteriors, enough for :func:`effective_dimension` and the mean KL
    per latent; they add (``+``) over batches and processes.

    ``count``: number of posteriors; ``sum_mu`` (L,); ``sum_mu_mu`` (L, L): sum of mu mu^T;
    ``sum_var`` (L,): sum of exp(logvar); ``sum_logvar`` (L,)."""

    count: float
    sum_mu: np.ndarray
    sum_mu_mu: np.ndarray
    sum_var: np.ndarray
    sum_logvar: np.ndarray

    @classmethod
    def of(cls, mu: np.ndarray, logvar: np.ndarray) -> LatentMoments:
        """The moments of posteriors with means ``mu`` and log-variances ``logvar`` (n, L)."""
        mu = np.asarray(mu, dtype=np.float64)
        logvar = np.asarray(logvar, dtype=np.float64)
        if mu.ndim != 2 or mu.shape != logvar.shape:
            raise ValueError(
                f"mu and logvar must have one shape (n, latent_dim), got {mu.shape} and "
                f"{logvar.shape}"
            )
        return cls(
            count=float(len(mu)),
            sum_mu=mu.sum(axis=0),
            sum_mu_mu=mu.T @ mu,
            sum_var=np.exp(logvar).sum(axis=0),
            sum_logvar=logvar.sum(axis=0),
        )

    @staticmethod
    def size(latent_dim: int) -> int:
        """Length of :meth:`to_vector` for ``latent_dim`` latents."""
        return 1 + latent_dim * (latent_dim + 3)

    def to_vector(self) -> np.ndarray:
        """All sums as one flat vector (what a training loop accumulates and reduces)."""
        return np.concatenate(
            [[self.count], self.sum_mu, self.sum_mu_mu.ravel(), self.sum_var, self.sum_logvar]
        )

    @classmethod
    def from_vector(cls, vector) -> LatentMoments:
        """The inverse of :meth:`to_vector`."""
        vector = np.asarray(vector, dtype=np.float64)
        latent_dim = round((-3 + math.sqrt(9 + 4 * (len(vector) - 1))) / 2)
        if cls.size(latent_dim) != len(vector):
            raise ValueError(f"{len(vector)} numbers are not the moments of any latent_dim")
        L = latent_dim
        return cls(
            count=float(vector[0]),
            sum_mu=vector[1 : 1 + L],
            sum_mu_mu=vector[1 + L : 1 + L + L * L].reshape(L, L),
            sum_var=vector[1 + L + L * L : 1 + 2 * L + L * L],
            sum_logvar=vector[1 + 2 * L + L * L :],
        )

    def __add__(self, other: LatentMoments) -> LatentMoments:
        return LatentMoments(
            self.count + other.count,
            self.sum_mu + other.sum_mu,
            self.sum_mu_mu + other.sum_mu_mu,
            self.sum_var + other.sum_var,
            self.sum_logvar + other.sum_logvar,
        )

    @property
    def latent_dim(self) -> int:
        return len(self.sum_mu)

    def signal(self) -> np.ndarray:
        """Covariance of the posterior means over the data, (L, L) (normalised by the count,
        as numpy's ``var``)."""
        mean = self.sum_mu / self.count
        covariance = self.sum_mu_mu / self.count - np.outer(mean, mean)
        return (covariance + covariance.T) / 2

    def noise(self) -> np.ndarray:
        """Mean posterior variance of each latent over the data, (L,)."""
        return self.sum_var / self.count

    def kl_per_latent(self) -> np.ndarray:
        """Mean KL of each latent's posterior to N(0, 1), (L,) (nat)."""
        mean_square = np.diag(self.sum_mu_mu) / self.count
        return 0.5 * (mean_square + self.noise() - 1 - self.sum_logvar / self.count)


@dataclass
class EffectiveDimension:
    """What :func:`effective_dimension` finds.

    ``dimension``: the number of informative directions (SNR above ``factor``); ``snr``: the
    SNR of every principal direction, largest first; ``signal`` and ``noise``: the variance of
    the posterior means and the mean posterior variance along each of them (unit directions in
    latent space, same order); ``surviving``: the surviving latents; ``redundant``: groups of
    surviving latents whose signal lies mostly along one and the same informative direction
    (when more latents survive than the dimension); ``noisy``: surviving latents whose signal
    lies mostly outside the informative directions."""

    dimension: int
    snr: list[float]
    signal: list[float]
    noise: list[float]
    surviving: list[int]
    factor: float = SNR_FACTOR
    redundant: list[list[int]] = field(default_factory=list)
    noisy: list[int] = field(default_factory=list)

    @property
    def redundant_latents(self) -> list[int]:
        return sorted(i for group in self.redundant for i in group)

    def message(self) -> str | None:
        """One line when more latents survive than the dimension, else None."""
        if len(self.surviving) <= self.dimension:
            return None
        parts = [f"latents {_and(group)} are redundant" for group in self.redundant]
        if self.noisy:
            one = len(self.noisy) == 1
            parts.append(
                f"latent{'' if one else 's'} {_and(self.noisy)} mostly carr"
                f"{'ies' if one else 'y'} noise"
            )
        dims = f"{self.dimension} dimension{'' if self.dimension == 1 else 's'}"
        one = len(self.surviving) == 1
        latents = f"{len(self.surviving)} latent{'' if one else 's'}"
        return (
            f"{latents} carr{'ies' if one else 'y'} information; "
            f"{'it spans' if one else 'they span'} {dims}"
            + (": " + "; ".join(parts) if parts else "")
            + "; a last stage that collapses the copies removes it (the presets' stage 11 does; "
            "--plan ending with a while_redundant stage, or --init RUN with such a plan)"
        )


def _and(items: list[int]) -> str:
    words = [str(i) for i in items]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def effective_dimension_of_moments(
    moments: LatentMoments, surviving: list[int] | None = None, factor: float = SNR_FACTOR
) -> EffectiveDimension:
    """The effective dimension (module docstring) of the posteriors summed in ``moments``.
    ``surviving``: the surviving latents (default: mean KL above :data:`SURVIVAL_KL`, from the
    moments)."""
    L = moments.latent_dim
    with np.errstate(divide="ignore", invalid="ignore"):
        if surviving is None:
            surviving = [i for i, kl in enumerate(moments.kl_per_latent()) if kl > SURVIVAL_KL]
        signal = moments.signal()
    if moments.count < 1 or not np.isfinite(signal).all() or not np.isfinite(moments.noise()).all():
        nan = [float("nan")] * L  # no posterior, or a diverged model: nothing to measure
        return EffectiveDimension(0, nan, nan, nan, list(surviving), factor)
    snr, axes, scale = _principal_axes(moments)
    whitened = signal / np.outer(scale, scale)
    informative = snr > factor
    dimension = int(informative.sum())
    # Each direction in latent coordinates (N^{-1/2} times the whitened axis), unit length.
    directions = axes / scale[:, None]
    directions /= np.linalg.norm(directions, axis=0, keepdims=True)
    along_signal = np.einsum("ik,ij,jk->k", directions, signal, directions)
    along_noise = np.einsum("ik,i,ik->k", directions, scale**2, directions)
    result = EffectiveDimension(
        dimension=dimension,
        snr=snr.tolist(),
        signal=np.maximum(along_signal, 0.0).tolist(),
        noise=along_noise.tolist(),
        surviving=list(surviving),
        factor=factor,
    )
    if len(surviving) > dimension:
        result.redundant, result.noisy = _copies(whitened, snr, axes, informative, surviving)
    return result


def _principal_axes(moments: LatentMoments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The SNRs (largest first), the principal axes (columns, orthonormal) of the whitened
    signal N^{-1/2} S N^{-1/2}, and the noise's standard deviations N^{1/2} (L,)."""
    scale = np.sqrt(np.maximum(moments.noise(), _TINY))
    snr, axes = np.linalg.eigh(moments.signal() / np.outer(scale, scale))
    order = np.argsort(snr)[::-1]
    return np.maximum(snr[order], 0.0), axes[:, order], scale


def principal_coordinates(mu: np.ndarray, logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The posterior means in the principal directions, in units of the posterior noise along
    each (n, L; the noise along every column is 1, the variance of column k is its SNR), and
    the SNRs, largest first."""
    moments = LatentMoments.of(mu, logvar)
    snr, axes, scale = _principal_axes(moments)
    centred = np.asarray(mu, dtype=np.float64) - moments.sum_mu / moments.count
    return (centred / scale) @ axes, snr


def _copies(whitened, snr, axes, informative, surviving) -> tuple[list[list[int]], list[int]]:
    """Surviving latents grouped by the informative direction that holds most of their signal
    (groups of two or more: redundant), and those whose signal lies mostly elsewhere."""
    # The whitened signal variance of latent i is sum_k snr_k axes[i, k]^2: its split over
    # the principal directions.
    parts = snr[None, :] * axes**2
    homes: dict[int, list[int]] = {}
    noisy = []
    for i in surviving:
        total = max(float(whitened[i, i]), _TINY)
        inside = parts[i, informative]
        if inside.size == 0 or inside.sum() / total <= INFORMATIVE_SHARE:
            noisy.append(i)
            continue
        homes.setdefault(int(np.argmax(inside)), []).append(i)
    redundant = sorted(sorted(group) for group in homes.values() if len(group) > 1)
    return redundant, sorted(noisy)


def effective_dimension(
    mu: np.ndarray,
    logvar: np.ndarray,
    surviving: list[int] | None = None,
    factor: float = SNR_FACTOR,
) -> EffectiveDimension:
    """The effective dimension of posteriors with means ``mu`` and log-variances ``logvar``,
    (n, L): :func:`effective_dimension_of_moments` of their :class:`LatentMoments`."""
    return effective_dimension_of_moments(LatentMoments.of(mu, logvar), surviving, factor)
