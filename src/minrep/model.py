"""The beta-VAE of the paper (Table I, Appendix A): a convolutional encoder, a latent upsampler
and an autoregressive WaveNet decoder that gives the law of each displacement.

Shapes: trajectories are displacements ``(batch, dim, L)``. Two decoders, chosen by
``ModelConfig.decoder``:

- ``"window"``, the paper's: displacement ``t`` from displacements ``t - receptive_field ..
  t - 1`` and the latent, for ``t = receptive_field .. L - 1`` (367 predictions for L = 399 and
  the paper's receptive field of 32). Every convolution is unpadded, as in the paper.
- ``"whole"``: every displacement, ``t = 0 .. L - 1``, the first from the latent alone. The same
  WaveNet sees the window before ``t`` (as invariant features, below) left-padded with zeros,
  plus a channel that marks which inputs are observed; a bank of exponentially decaying
  memories of the whole past,
  ``m_k(t) = sum_{s<t} (1 - a_k) a_k^(t-1-s) x_s`` with ``a_k = exp(-1 / tau_k)`` at timescales
  ``tau_k`` of 4 .. 1024 steps, adds ``sum_k w_k(z, t) m_k(t)`` to the predicted mean: linear in
  the past, as the best predictor of a Gaussian process is (fractional Gaussian noise's power-law
  memory is close to such a sum of exponentials: Carmona and Coutin 1998). The conditioning is
  the latent's code and the features ``1 - a_k^t`` (how much of each memory the observed past
  fills), the same for any length ``L``, so a trajectory of any length is encoded, scored and
  generated with cost per displacement independent of its length. Times after
  ``time_horizon`` (the training length, set by :func:`minrep.train.train`) are conditioned as
  that one: the network never saw later features, and a stationary process stays stationary.
  ``memory="fractional"`` (experimental) replaces the free weights w_k by fractional
  differencing of an order d(z): the WaveNet gives the law of ``y = (1 - B)^d x``, a series of
  short memory, and the whole past's memory has one parameter (:meth:`VAE.fractional_memory`).

  Its law is symmetric by construction, as that of every process here: the WaveNet reads only
  :func:`invariant_features` of the past (each step's length and its component along the
  previous step), which do not change when the trajectory is mirrored (x -> -x) or, in 2D and
  3D, rotated; it outputs one log sigma for all coordinates and the coefficients of a linear
  combination of the ``receptive_field`` displacements before ``t``, which with the memories'
  part is the predicted mean. The mean is therefore odd in the past (rotated with it), and no
  bias is left for a long memory to integrate into a drift (measured, docs/whole-decoder.md).
  Processes with a drift or an anisotropy need the ``"window"`` decoder.

  ``reads_past=False`` gives the WaveNet only which past steps exist, not their values: log
  sigma and the mean's coefficients are then functions of the latent and the time, the form of
  the law of a Gaussian process (its best predictor is linear in the past, with coefficients
  and variance that do not depend on the values). What the decoder could read from the window
  before each step (the local variance, the measurement's correlations) must then come
  through the latent.


``scale_equivariant`` (off in ``ModelConfig()``, on in :func:`minrep.train.train`) is a
reparameterisation measured in ``docs/scale-equivariance.md``: the convolutions see
displacements divided by a scale (the trajectory's RMS in the encoder; a scale predicted from
the latent in the decoder), and the decoder's predictions are scaled back. The information
flow is the paper's (D must still travel through the latent) but gradients no longer grow like
1/sqrt(D), which let training reach the exact likelihood on a CPU budget.

The WaveNet comes in two variants, chosen by ``gate``, ``stack_scaling``, ``condition_bias``
and ``output_init``. minrep's (the defaults, and the shipped ``bm``, ``fbm``, ``sbm``) gates
with tanh(f) sigmoid(g) as in van den Oord et al. (2016). The paper's published code
(:meth:`ModelConfig.published`) gates with f sigmoid(g), adds each block's input to the
residual stream twice and scales the stream by sqrt(1/2) after every block, scales the skip sum
by sqrt(1/n_blocks), has no bias in the conditioning convolutions, and draws its last layer
with a larger spread (:meth:`VAE.reset_parameters`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minrep.dimension import SURVIVAL_KL  # re-exported: defined there, without torch

LOG_2PI = math.log(2 * math.pi)

CPU_FORWARD_BATCH = 256
"""Trajectories per forward pass without gradient on a CPU (validation, ``model_nll``,
``encode``): larger batches leave the cache; per trajectory, 1,024 runs 1.2-1.5x slower and
2,048 2.3x (one thread, ``benchmarks/forward_batch.py``)."""
GPU_FORWARD_BATCH = 8192
"""The same on a GPU, where the larger the batch, the faster."""


def forward_batch_size(device: torch.device | str) -> int:
    """Trajectories per forward pass without gradient on ``device``."""
    return GPU_FORWARD_BATCH if torch.device(device).type == "cuda" else CPU_FORWARD_BATCH


def full_precision(x: Tensor):
    """A region in float32 whatever autocast is around it (``minrep train --precision
    bf16-mixed``): the head's last layer, the likelihood and the KL, where bfloat16's 3 digits
    would bias the NLL that training compares with the exact one at 1e-3 nat."""
    return torch.autocast(x.device.type, enabled=False)


def kl_to_prior(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL divergence of N(mu, exp(logvar)) to N(0, 1), elementwise (nat)."""
    return 0.5 * (mu * mu + torch.exp(logvar) - 1 - logvar)


def latent_covariance(mu: Tensor) -> Tensor:
    """Sum of the squared off-diagonal covariances of the posterior means over a batch,
    ``mu`` (batch, latent_dim) -> scalar. One parameter split over two latents (a local
    minimum of the beta-VAE loss, measured in docs/training-recipes.md) gives them a large
    covariance; latents of independent parameters, or a collapsed one, give about none."""
    centred = mu - mu.mean(dim=0)
    covariance = centred.T @ centred / max(len(mu) - 1, 1)
    return (covariance.pow(2).sum() - covariance.diagonal().pow(2).sum()) / 2


def surviving(kl_per_latent) -> list[int]:
    """Indices of the latents whose mean KL exceeds :data:`SURVIVAL_KL`."""
    return [i for i, value in enumerate(kl_per_latent) if value > SURVIVAL_KL]


@dataclass
class ModelConfig:
    """Sizes of every layer; defaults are the paper's (Table I). Saved as ``config.json``."""

    dim: int = 1
    latent_dim: int = 6
    encoder_channels: int = 16
    encoder_layers: int = 4
    kernel_size: int = 3
    pool_size: int = 16  # adaptive average and max pooling to this length each
    encoder_hidden: tuple[int, ...] = (200, 100)
    decoder_hidden: tuple[int, ...] = (100, 200)  # then channels x base length (16 x 32 = 512)
    upsample_channels: int = 16
    upsample_length: int = 32
    upsample_layers: int = 4  # transposed convolutions; the last maps to latent_dim channels
    residual_channels: int = 16
    skip_channels: int = 16
    causal_kernel: int = 2
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    n_mixtures: int = 1  # Gaussians per predicted displacement component
    log_sigma_min: float = -12.0  # floor of the predicted log standard deviation
    scale_equivariant: bool = False  # minrep's training turns it on (see the module docstring)
    log_scale_mean: float = 0.0  # training-set mean of log RMS displacement (set from data)
    gate: str = "tanh"  # "tanh": tanh(f) sigmoid(g); "linear": f sigmoid(g) (published code)
    stack_scaling: bool = False  # published code: h <- (2 h + res) sqrt(1/2), skips sqrt(1/n)
    condition_bias: bool = True  # published code: the conditioning 1x1 convolutions have none
    output_init: str = "minrep"  # "published": last layer N(0, 2 / fan_in) cut at +-2
    decoder: str = "window"  # "window": the paper's; "whole": every step, whole-past memory
    memory_timescales: tuple[float, ...] = (4, 8, 16, 32, 64, 128, 256, 512, 1024)  # "whole"
    memory_hidden: int = 32  # "whole": hidden units of the memory weights w_k(z, t)
    time_horizon: int = 0  # "whole": later times are conditioned as this one (0: none)
    log_time: bool = False  # "whole": log(1 + t) among the time features (see LatentCode)
    memory: str = "free"  # "whole": "free" weights w_k(z, t), or "fractional" (see VAE)
    ageing: bool = False  # "whole": step t's scale times sqrt((t+1)^a - t^a), a(z) (see VAE)
    mean_lags: int = 0  # "whole": the mean's coefficients cover this many last steps (0: rf)
    early_bins: int = 0  # encoder: log mean squares of steps [0], [1], [2, 4), ... (off: v7)
    reads_past: bool = True  # "whole": the WaveNet reads the past's values (False: see VAE)

    def __post_init__(self):
        self.encoder_hidden = tuple(self.encoder_hidden)
        self.decoder_hidden = tuple(self.decoder_hidden)
        self.dilations = tuple(self.dilations)
        self.memory_timescales = tuple(float(tau) for tau in self.memory_timescales)
        for name in (
            "dim",
            "latent_dim",
            "encoder_layers",
            "upsample_layers",
            "n_mixtures",
            "kernel_size",
            "causal_kernel",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.early_bins < 0:
            raise ValueError(f"ModelConfig.early_bins must be >= 0, got {self.early_bins}")
        if self.early_bins and not self.scale_equivariant:
            raise ValueError("ModelConfig.early_bins are relative to the RMS: scale_equivariant")
        if self.log_time and self.decoder != "whole":
            raise ValueError("ModelConfig.log_time is a time feature of the 'whole' decoder")
        if self.decoder != "whole" and (
            self.memory != "free" or self.ageing or self.mean_lags or not self.reads_past
        ):
            raise ValueError(
                "ModelConfig.memory, ageing, mean_lags and reads_past belong to the 'whole' decoder"
            )
        if not 0 <= self.mean_lags <= self.receptive_field:
            raise ValueError(
                f"ModelConfig.mean_lags must be in 0 .. {self.receptive_field} (the receptive "
                f"field), got {self.mean_lags}"
            )
        if self.decoder == "whole" and self.n_mixtures != 1:
            raise ValueError("ModelConfig.decoder 'whole' predicts one Gaussian: n_mixtures = 1")
        if any(not tau > 0 for tau in self.memory_timescales):
            raise ValueError(
                f"ModelConfig.memory_timescales must be > 0, got {self.memory_timescales}"
            )
        for name, allowed in (
            ("gate", GATES),
            ("output_init", ("minrep", "published")),
            ("decoder", DECODERS),
            ("memory", MEMORIES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"ModelConfig.{name} must be one of {', '.join(allowed)}, got "
                    f"{getattr(self, name)!r}"
                )

    @classmethod
    def whole_trajectory(cls, **sizes) -> ModelConfig:
        """minrep's decoder for whole trajectories, as ``minrep train --decoder whole`` builds
        it: scale-equivariant, fractional memory over :data:`FRACTIONAL_TIMESCALES`, ageing
        (docs/whole-decoder.md, v6), the mean's free coefficients over the last
        :data:`WHOLE_MEAN_LAGS` steps only (v7: the memory beyond them is the order d's alone,
        which sets FBM's far lags)."""
        return cls(
            **{"scale_equivariant": True, "mean_lags": WHOLE_MEAN_LAGS, **sizes},
            decoder="whole",
            memory="fractional",
            memory_timescales=FRACTIONAL_TIMESCALES,
            ageing=True,
        )

    @classmethod
    def published(cls, **sizes) -> ModelConfig:
        """The network of the paper's published code (SPIVAE ``VAEWaveNet``): no scale
        equivariance, a linear gate, scaled residual and skip sums, bias-free conditioning."""
        return cls(
            **sizes,
            scale_equivariant=False,
            gate="linear",
            stack_scaling=True,
            condition_bias=False,
            output_init="published",
        )

    @property
    def receptive_field(self) -> int:
        """Past displacements that one prediction sees (32 for the paper's network)."""
        return self.causal_kernel + sum((self.kernel_size - 1) * d for d in self.dilations)

    @property
    def linear_window(self) -> int:
        """``"whole"``: how many of the last steps the mean's coefficients multiply."""
        return self.mean_lags or self.receptive_field

    @property
    def first_predicted_step(self) -> int:
        """The first displacement the decoder predicts: the receptive field for the paper's
        ``"window"`` decoder, 0 for ``"whole"``. The model's NLL is over steps from here on."""
        return 0 if self.decoder == "whole" else self.receptive_field

    @property
    def condition_channels(self) -> int:
        """Channels of the decoder's conditioning: the upsampled latent (``"window"``), or the
        latent's code and one time feature per memory (``"whole"``)."""
        if self.decoder == "whole":
            return self.upsample_channels + len(self.memory_timescales) + int(self.log_time)
        return self.latent_dim

    @property
    def min_steps(self) -> int:
        """Fewest displacements a trajectory needs: one prediction (after a full receptive
        field for the ``"window"`` decoder), and something left for the encoder's (and
        upsampler's) unpadded kernels."""
        if self.decoder == "whole":
            return (self.kernel_size - 1) * self.encoder_layers + 1
        shrink = (self.kernel_size - 1) * max(self.encoder_layers, self.upsample_layers)
        return max(self.receptive_field + 1, shrink + 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model configuration keys: {', '.join(unknown)}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


GATES = ("tanh", "linear")
DECODERS = ("window", "whole")
MEMORIES = ("free", "fractional")
FRACTIONAL_TIMESCALES = tuple(2.0**k for k in range(1, 18))
"""Memories for ``memory="fractional"``: 2 .. 131,072 steps, so that the fractional tail is
followed to about 10^5 steps (a few % error up to 10^4, :func:`fractional_tail_table`)."""
WHOLE_MEAN_LAGS = 8
"""Free coefficients of the ``"whole"`` decoder's mean: with 32, they took over the memory up to
lag 32 from the fractional order d, which the likelihood of 400 steps then left shrunk towards
0 (FBM generated at lags 100-1000: alpha_g error 0.117 with 32, 0.070 with 8;
docs/whole-decoder.md)."""


# ---------------------------------------------------------------------------------------------
# Building blocks


def mlp(sizes: list[int], final_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if final_relu or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def rms_scale(x: Tensor) -> Tensor:
    """Root-mean-square displacement of each trajectory, (batch,), never zero, no gradient."""
    return x.detach().pow(2).mean(dim=(1, 2)).sqrt().clamp_min(1e-30)


EARLY_FLOOR = 1e-6
"""Floor of the early mean squares, relative to the trajectory's mean square: a step of exactly
zero (a track on a pixel grid) must not give log 0."""


def early_log_mean_squares(h: Tensor, n_bins: int) -> Tensor:
    """``h`` (batch, dim, L), displacements over their RMS -> (batch, n_bins): the log of the
    mean of |h_t|^2 over steps [0], [1], [2, 4), ..., [2^(n-2), 2^(n-1)); 0 (the trajectory's
    own mean square) for a bin past the end. Why: the pooled bins span L / 16 steps each, and
    for SBM, whose step variance 2 D ((t+1)^alpha - t^alpha) changes most in the first steps,
    those steps carry most of what a track says about D apart from alpha (the best possible
    R^2 of log10 D falls from 0.964 to 0.933 without the first 16 of 399 steps). Off in
    :meth:`ModelConfig.whole_trajectory`: with 6 bins, SBM (data and seed 13) ended with readouts
    R^2 alpha 0.930 and log10 D 0.854 against 0.967 and 0.925 without (docs/whole-decoder.md)."""
    squares = h.pow(2).sum(dim=1)  # (batch, L): |h_t|^2, rotation-invariant
    features = []
    for k in range(n_bins):
        start, stop = (0, 1) if k == 0 else (2 ** (k - 1), 2**k)
        if start >= squares.shape[-1]:
            features.append(squares.new_zeros(len(h)))
            continue
        mean_square = squares[:, start:stop].mean(dim=1) / h.shape[1]
        features.append(torch.log(mean_square + EARLY_FLOOR))
    return torch.stack(features, dim=1)


# ---------------------------------------------------------------------------------------------
# The three parts


class Encoder(nn.Module):
    """Displacements (batch, dim, L) -> latent mean and log-variance, (batch, latent_dim) each."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c, k = config.encoder_channels, config.kernel_size
        self.convs = nn.ModuleList(
            nn.Conv1d(config.dim if i == 0 else c, c, k) for i in range(config.encoder_layers)
        )
        # Scalars beside the pooled features: the log RMS (scale-equivariant) and, for the
        # "whole" decoder, which takes any length, the log of the length (each pooled bin
        # spans L / pool_size steps: SBM's law depends on the time since its start).
        self.with_length = config.decoder == "whole"
        scalars = int(config.scale_equivariant) + int(self.with_length) + config.early_bins
        self.mlp = mlp([2 * c * config.pool_size + scalars, *config.encoder_hidden], True)
        self.latent = nn.Linear(config.encoder_hidden[-1], 2 * config.latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = x
        if self.config.scale_equivariant:
            scale = rms_scale(x)
            h = x / scale[:, None, None]
        h0 = h
        for conv in self.convs:
            h = F.relu(conv(h))
        pooled = torch.cat(
            [
                F.adaptive_avg_pool1d(h, self.config.pool_size),
                F.adaptive_max_pool1d(h, self.config.pool_size),
            ],
            dim=-1,
        ).flatten(1)
        if self.config.scale_equivariant:
            log_scale = (scale.log() - self.config.log_scale_mean)[:, None]
            pooled = torch.cat([pooled, log_scale], dim=1)
        if self.with_length:
            log_length = pooled.new_full((len(x), 1), math.log(x.shape[-1]))
            pooled = torch.cat([pooled, log_length], dim=1)
        if self.config.early_bins:
            pooled = torch.cat([pooled, early_log_mean_squares(h0, self.config.early_bins)], 1)
        mu, logvar = self.latent(self.mlp(pooled)).chunk(2, dim=1)
        return mu, logvar


class LatentUpsampler(nn.Module):
    """Latent (batch, latent_dim) -> conditioning signal (batch, latent_dim, L)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config.upsample_channels
        self.mlp = mlp(
            [config.latent_dim, *config.decoder_hidden, c * config.upsample_length],
            final_relu=True,
        )
        n = config.upsample_layers
        self.deconvs = nn.ModuleList(
            nn.ConvTranspose1d(c, config.latent_dim if i == n - 1 else c, config.kernel_size)
            for i in range(n)
        )

    def forward(self, z: Tensor, length: int) -> Tensor:
        c = self.config
        h = self.mlp(z).view(-1, c.upsample_channels, c.upsample_length)
        h = F.interpolate(h, size=length - c.upsample_layers * (c.kernel_size - 1), mode="linear")
        for deconv in self.deconvs:
            h = F.relu(deconv(h))
        return h


def memory_decays(timescales) -> Tensor:
    """Decay per step ``a_k = exp(-1 / tau_k)`` of each memory, (K,)."""
    return torch.exp(-1.0 / torch.as_tensor(timescales, dtype=torch.float64))


def time_features(times: Tensor, timescales) -> Tensor:
    """``1 - a_k^t`` for displacement indices ``times`` (n,): the weight the observed past
    gives memory k when displacement t is predicted (0 for t <= 0, 1 long after the start)
    -> (K, n)."""
    t = times.to(torch.float64).clamp_min(0)[None, :]
    return (1 - memory_decays(timescales)[:, None] ** t).to(torch.float32)


def exponential_memories(x: Tensor, timescales) -> Tensor:
    """The memories of the whole past, ``m_k(t) = sum_{s<t} (1 - a_k) a_k^(t-1-s) x_s``
    (0 at t = 0): displacements (batch, dim, L) -> (batch, dim, K, L), a causal filter applied
    by FFT (cost L log L, exact to float rounding)."""
    length = x.shape[-1]
    a = memory_decays(timescales)[:, None]
    lag = torch.arange(length, dtype=torch.float64)
    kernel = torch.where(lag > 0, (1 - a) * a ** (lag - 1).clamp_min(0), 0.0).to(x.dtype)
    n = 2 * length
    spectrum = torch.fft.rfft(x, n)[:, :, None, :] * torch.fft.rfft(kernel.to(x.device), n)
    return torch.fft.irfft(spectrum, n)[..., :length]


FRACTIONAL_ORDER_MAX = 0.49
"""|d| < 1/2: fractional Gaussian noise of Hurst exponent H has d = H - 1/2 (alpha = 2H)."""
FRACTIONAL_ORDER_STEP = 0.01  # the grid of :func:`fractional_tail_table`


def fractional_coefficients(d: Tensor, n: int) -> Tensor:
    """``pi_1 .. pi_n`` of fractional differencing, ``(1 - B)^d = sum_j pi_j B^j`` (``pi_0 =
    1``, ``pi_j = pi_(j-1) (j - 1 - d) / j``): orders d (batch,) -> (batch, n), lag 1 first."""
    j = torch.arange(1, n + 1, dtype=d.dtype, device=d.device)
    return torch.cumprod((j - 1 - d[:, None]) / j, dim=1)


@functools.lru_cache(maxsize=8)
def fractional_tail_table(timescales: tuple[float, ...], offset: int) -> Tensor:
    """Weights of the memories that give the tail of fractional differencing: row g, for the
    order ``d_g = -FRACTIONAL_ORDER_MAX + g FRACTIONAL_ORDER_STEP``, holds the w_k with
    ``sum_k w_k (1 - a_k) a_k^(i-1) ~ pi_(offset + i)(d_g)`` for i >= 1 -> (G, K), float64.

    Fitted in relative error at log-spaced i up to 8 times the longest timescale, with weights
    of one sign (``pi_j``, j >= 1, has the sign of -d): a sum of exponentials with geometric
    timescales follows a power law ``j^(-1-d)`` (Carmona and Coutin 1998), here to about 2 %
    for i up to 10^4 with the :data:`FRACTIONAL_TIMESCALES`, and alternating weights would
    cancel in single precision."""
    from scipy.optimize import nnls
    from scipy.special import gammaln

    a = np.exp(-1.0 / np.asarray(timescales))
    i = np.unique(np.geomspace(1, 8 * max(timescales), 600).astype(int)).astype(float)
    basis = (1 - a) * a ** (i[:, None] - 1)
    j = offset + i
    orders = np.arange(-FRACTIONAL_ORDER_MAX, FRACTIONAL_ORDER_MAX + 1e-9, FRACTIONAL_ORDER_STEP)
    rows = []
    for d in orders:
        # pi_j = -d Gamma(j - d) / (Gamma(1 - d) Gamma(j + 1)); its magnitude ~ j^(-1-d).
        magnitude = np.exp(gammaln(j - d) - gammaln(j + 1) - gammaln(1 - d))
        shape = j ** (-1 - d)
        weights, _ = nnls(basis / shape[:, None], abs(d) * magnitude / shape, maxiter=5000)
        rows.append(-np.sign(d) * weights)
    return torch.tensor(np.array(rows))


def ageing_log_scale(exponent: Tensor, times: Tensor) -> Tensor:
    """``log sqrt((t+1)^a - t^a)`` for exponents a (batch,) and steps t >= 0 (n,) -> (batch,
    n): the log standard deviation of step t of a process whose MSD grows as t^a (SBM),
    relative to the first step; 0 for a = 1 (to rounding). Computed as ``a log(t+1) + log(1 -
    (t/(t+1))^a)``, exact for large t and small a, with a finite gradient at t = 0."""
    t = times.to(exponent.dtype)[None, :]
    a = exponent[:, None]
    later = t > 0
    ratio = torch.where(later, t / (t + 1), 0.5)  # any value in (0, 1) where t = 0
    log_increment = a * torch.log1p(t) + torch.log(-torch.expm1(a * torch.log(ratio)))
    return 0.5 * torch.where(later, log_increment, 0.0)


def invariant_features(x: Tensor) -> Tensor:
    """What the ``"whole"`` decoder's WaveNet reads of displacements (batch, dim, L): each
    step's length |x_s| and its component along the previous step, x_s . x_(s-1) / |x_(s-1)|
    (0 for the first step), (batch, 2, L). Unchanged when the trajectory is mirrored or
    rotated, multiplied by c when it is scaled by c > 0; in 1D they give the past up to its
    sign."""
    length = x.norm(dim=1, keepdim=True)
    direction = x / length.clamp_min(torch.finfo(x.dtype).tiny)  # 0 where x is
    along = (x[..., 1:] * direction[..., :-1]).sum(dim=1, keepdim=True)
    return torch.cat([length, F.pad(along, (1, 0))], dim=1)


def past_windows(x: Tensor, width: int) -> Tensor:
    """The ``width`` displacements before each step, oldest first, zeros before the start:
    (batch, dim, L) -> (batch, dim, L, width), a view of the padded series."""
    return F.pad(x, (width, 0)).unfold(-1, width, 1)[:, :, : x.shape[-1]]


@dataclass
class TimeCondition:
    """The ``"whole"`` decoder's conditioning of n times, kept in its two parts: the latent's
    code (batch, C), the same at every time, and the time features (K, n), the same for every
    trajectory. A 1x1 convolution of their concatenation is the sum of one product of each,
    broadcast (:func:`pointwise`), so training never forms the (batch, C + K, n) tensor."""

    code: Tensor
    features: Tensor

    def dense(self) -> Tensor:
        """The concatenation, (batch, C + K, n)."""
        n = self.features.shape[-1]
        features = self.features[None].expand(len(self.code), -1, -1)
        return torch.cat([self.code[:, :, None].expand(-1, -1, n), features], dim=1)

    def last(self, n: int) -> TimeCondition:
        return TimeCondition(self.code, self.features[:, -n:])


def pointwise(conv: nn.Conv1d, condition: Tensor | TimeCondition, n: int) -> Tensor:
    """The 1x1 convolution ``conv`` of the last ``n`` columns of a conditioning, (batch,
    out, n)."""
    if isinstance(condition, Tensor):
        return conv(condition[..., -n:])
    weight, c = conv.weight[..., 0], condition.code.shape[1]
    out = (condition.code @ weight[:, :c].T)[:, :, None]
    out = out + (weight[:, c:] @ condition.features[:, -n:])[None]
    return out if conv.bias is None else out + conv.bias[:, None]


LOG_TIME_SCALE = math.log(1025.0)
"""``log_time``'s feature is ``log(1 + t) / LOG_TIME_SCALE``: about 1 at the longest memory."""


class LatentCode(nn.Module):
    """The ``"whole"`` decoder's conditioning: latent (batch, latent_dim) and displacement
    indices (n,) -> a :class:`TimeCondition`: the latent's code (an MLP, (batch,
    upsample_channels)) and :func:`time_features` (K, n), with ``log_time`` one more row,
    ``log(1 + t)`` (0 before the start): a process without a time scale changes as a power
    of t (SBM's diffusivity, ``t^(alpha - 1)``), which is linear in log t, and the first
    steps, where it changes fastest, are far apart in it."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.timescales = config.memory_timescales
        self.horizon = config.time_horizon
        self.log_time = config.log_time
        sizes = [config.latent_dim, *config.decoder_hidden, config.upsample_channels]
        self.mlp = mlp(sizes, final_relu=True)

    def forward(self, z: Tensor, times: Tensor) -> TimeCondition:
        if self.horizon:  # beyond the training length the network has seen no time
            times = times.clamp_max(self.horizon)
        features = time_features(times, self.timescales)
        if self.log_time:
            log_time = torch.log1p(times.to(torch.float64).clamp_min(0)) / LOG_TIME_SCALE
            features = torch.cat([features, log_time[None].to(features)])
        return TimeCondition(self.mlp(z), features.to(z))


class MemoryWeights(nn.Module):
    """Conditioning of n times -> weight of each memory in the mean, (batch, 1, K, n), the same
    for every coordinate: a function of the latent and the time only, so that the predicted
    mean stays linear in the past (and rotates with it)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.k = len(config.memory_timescales)
        self.hidden = nn.Conv1d(config.condition_channels, config.memory_hidden, 1)
        self.out = nn.Conv1d(config.memory_hidden, self.k, 1)

    def forward(self, condition: Tensor | TimeCondition) -> Tensor:
        n = condition.shape[-1] if isinstance(condition, Tensor) else condition.features.shape[-1]
        return self.out(F.relu(pointwise(self.hidden, condition, n)))[:, None]


def gated_activation(filt: Tensor, gate: Tensor, kind: str) -> Tensor:
    """The WaveNet gate: tanh(filt) sigmoid(gate) (``"tanh"``) or filt sigmoid(gate)
    (``"linear"``, a gated linear unit, as in the paper's published code)."""
    return (torch.tanh(filt) if kind == "tanh" else filt) * torch.sigmoid(gate)


RESIDUAL_SCALE = math.sqrt(0.5)


class ResidualBlock(nn.Module):
    """Gated, dilated, conditioned WaveNet block (van den Oord et al. 2016)."""

    def __init__(self, config: ModelConfig, dilation: int, last: bool = False):
        super().__init__()
        r = config.residual_channels
        self.gate = config.gate
        self.stack_scaling = config.stack_scaling
        self.dilation = dilation
        self.shrink = dilation * (config.kernel_size - 1)
        self.filter_gate = nn.Conv1d(r, 2 * r, config.kernel_size, dilation=dilation)
        self.condition = nn.Conv1d(config.condition_channels, 2 * r, 1, bias=config.condition_bias)
        # Nothing reads the residual stream after the last block: it has a skip output only.
        self.residual = None if last else nn.Conv1d(r, r, 1)
        self.skip = nn.Conv1d(r, config.skip_channels, 1)

    def forward(self, h: Tensor, condition: Tensor | TimeCondition) -> tuple[Tensor, Tensor]:
        """``h`` (batch, r, n) and ``condition`` (batch, condition_channels, >= n - shrink) or a
        :class:`TimeCondition`, right-aligned in time -> new ``h`` (None after the last block)
        and skip output, (batch, ., n - shrink). With ``stack_scaling`` the new ``h`` is
        (2 h + residual) sqrt(1/2): the published code adds the block's input once inside the
        block and once more in the stack."""
        pre = self.filter_gate(h)
        pre = pre + pointwise(self.condition, condition, pre.shape[-1])
        gated = gated_activation(*pre.chunk(2, dim=1), self.gate)
        if self.residual is None:
            return None, self.skip(gated)
        past = h[..., self.shrink :]
        if self.stack_scaling:
            h = (2 * past + self.residual(gated)) * RESIDUAL_SCALE
        else:
            h = past + self.residual(gated)
        return h, self.skip(gated)


class WaveNet(nn.Module):
    """Past displacements and conditioning -> parameters of the law of the next displacement."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        r = config.residual_channels
        # The "whole" decoder reads the invariant features of the past and a channel that is 1
        # where the past is observed; it outputs log sigma and the coefficients of the mean.
        whole = config.decoder == "whole"
        self.input = nn.Conv1d(3 if whole else config.dim, r, 1)
        self.causal = nn.Conv1d(r, r, config.causal_kernel)
        n = len(config.dilations)
        self.blocks = nn.ModuleList(
            ResidualBlock(config, d, last=i == n - 1) for i, d in enumerate(config.dilations)
        )
        per_component = 2 if config.n_mixtures == 1 else 3 * config.n_mixtures
        outputs = 1 + config.linear_window if whole else config.dim * per_component
        self.head_hidden = nn.Conv1d(config.skip_channels, config.skip_channels, 1)
        self.head_out = nn.Conv1d(config.skip_channels, outputs, 1)

    def forward(self, x: Tensor, condition: Tensor | TimeCondition) -> Tensor:
        """``x`` (batch, in, n) and ``condition`` (of >= n - rf + 1 times; see
        :class:`ResidualBlock`) ->
        head output (batch, dim * params, n - rf + 1): column j is the law of displacement
        j + rf given x[j .. j + rf - 1] (rf: the receptive field)."""
        h = self.causal(self.input(x))
        skips = None
        for block in self.blocks:
            h, skip = block(h, condition)
            skips = skip if skips is None else skip + skips[..., block.shrink :]
        if self.config.stack_scaling:
            skips = skips * self.skip_scale
        hidden = F.relu(self.head_hidden(F.relu(skips)))
        with full_precision(hidden):
            return self.head_out(hidden.to(self.head_out.weight.dtype))

    @property
    def skip_scale(self) -> float:
        """Factor of the skip sum with ``stack_scaling``: sqrt(1 / number of blocks)."""
        return math.sqrt(1 / len(self.blocks))


# ---------------------------------------------------------------------------------------------
# The VAE


@dataclass
class Prediction:
    """Law of each predicted displacement, tensors (batch, dim, K, n_pred); ``log_weight`` is
    None for a single Gaussian (K = 1)."""

    mean: Tensor
    log_sigma: Tensor
    log_weight: Tensor | None = None

    def sample(self, normal: Tensor, uniform: Tensor | None = None) -> Tensor:
        """Displacements (batch, dim, n) from standard normals of that shape and, for a
        mixture, uniforms that pick the component (inverse CDF of the weights)."""
        if self.log_weight is None:
            return self.mean[:, :, 0] + torch.exp(self.log_sigma[:, :, 0]) * normal
        cumulative = torch.cumsum(torch.exp(self.log_weight), dim=2)
        k = (cumulative < uniform[:, :, None]).sum(2, keepdim=True)
        k = k.clamp_max(self.mean.shape[2] - 1)
        chosen_mean = self.mean.gather(2, k)[:, :, 0]
        return chosen_mean + torch.exp(self.log_sigma.gather(2, k)[:, :, 0]) * normal

    def log_prob(self, target: Tensor) -> Tensor:
        """Log density of ``target`` (batch, dim, n_pred), per displacement component."""
        t = target[:, :, None, :]
        z = (t - self.mean) * torch.exp(-self.log_sigma)
        log_p = -0.5 * (LOG_2PI + z * z) - self.log_sigma
        if self.log_weight is None:
            return log_p[:, :, 0]
        return torch.logsumexp(log_p + self.log_weight, dim=2)


class VAE(nn.Module):
    """Encoder, latent sampling, upsampler and WaveNet decoder (Fig. 1 of the paper).

    ``training_range`` is the parameter range of the data the model was trained on,
    ``{"alpha": [lo, hi], "D": [lo, hi]}`` (recorded in ``config.json`` by
    :func:`minrep.train.train`, set by :func:`minrep.checkpoint.load_model`), or None when
    unknown; the analysis judges the model inside it."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.training_range: dict | None = None
        self.config = config or ModelConfig()
        self.encoder = Encoder(self.config)
        if self.config.decoder == "whole":
            self.latent_code = LatentCode(self.config)
            if self.config.ageing:
                self.ageing_head = nn.Linear(self.config.latent_dim, 1)
            if self.config.memory == "fractional":
                self.order_head = nn.Linear(self.config.latent_dim, 1)
                table = fractional_tail_table(self.config.memory_timescales, self.receptive_field)
                self.register_buffer("tail_table", table.to(torch.float32), persistent=False)
            else:
                self.memory_weights = MemoryWeights(self.config)
        else:
            self.upsampler = LatentUpsampler(self.config)
        self.decoder = WaveNet(self.config)
        if self.config.scale_equivariant:
            self.scale_head = nn.Linear(self.config.latent_dim, 1)
        self.reset_parameters()

    @property
    def receptive_field(self) -> int:
        return self.config.receptive_field

    @property
    def first_predicted_step(self) -> int:
        return self.config.first_predicted_step

    def reset_parameters(self) -> None:
        """The paper's initialisation: Kaiming normal (fan_out, ReLU) weights and zero biases;
        zero log-variance rows in the latent layer; a fan_in normal last layer: standard
        deviation sqrt(2 / fan_in) cut at +-2 (``output_init="published"``, the published
        code's ReLU gain) or 1 / sqrt(fan_in) cut at two standard deviations (minrep); zero
        when ``scale_equivariant`` (the prediction then starts as Brownian motion at the
        training set's mean scale, instead of log sigma spread over -55 .. 2). The memory
        weights of the ``"whole"`` decoder start at zero: no long memory."""
        for module in self.modules():
            if isinstance(module, nn.Conv1d | nn.ConvTranspose1d | nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        latent = self.encoder.latent
        with torch.no_grad():
            latent.weight[self.config.latent_dim :] = 0.0
        if self.config.ageing:
            nn.init.zeros_(self.ageing_head.weight)
        if self.config.memory == "fractional":
            nn.init.zeros_(self.order_head.weight)
        elif self.config.decoder == "whole":
            nn.init.zeros_(self.memory_weights.out.weight)
        out = self.decoder.head_out
        if self.config.scale_equivariant:
            nn.init.zeros_(out.weight)
            nn.init.zeros_(self.scale_head.weight)
            nn.init.constant_(self.scale_head.bias, self.config.log_scale_mean)
        elif self.config.output_init == "published":
            fan_in = out.weight.shape[1] * out.weight.shape[2]
            nn.init.trunc_normal_(out.weight, std=math.sqrt(2 / fan_in), a=-2.0, b=2.0)
        else:
            fan_in = out.weight.shape[1] * out.weight.shape[2]
            std = 1 / math.sqrt(fan_in)
            nn.init.trunc_normal_(out.weight, std=std, a=-2 * std, b=2 * std)

    def check_input(self, x: Tensor) -> None:
        if x.ndim != 3 or x.shape[1] != self.config.dim:
            raise ValueError(
                f"expected displacements of shape (batch, {self.config.dim}, L), got "
                f"{tuple(x.shape)}"
            )
        if x.shape[-1] < self.config.min_steps:
            why = (
                "for the encoder's convolutions"
                if self.first_predicted_step == 0
                else f"one prediction after the receptive field of {self.receptive_field}"
            )
            raise ValueError(
                f"trajectories need at least {self.config.min_steps} displacements ({why}), "
                f"got {x.shape[-1]}"
            )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Latent mean and log-variance, (batch, latent_dim) each."""
        self.check_input(x)
        return self.encoder(x)

    def collapse_latents(self, latents: list[int]) -> list[int]:
        """Give ``latents`` the prior as posterior for every input (mean 0, log-variance 0, KL
        0), as the beta-VAE loss does to a latent it prunes: their rows of the encoder's last
        layer (``encoder.latent``) are zeroed. Returns those rows."""
        rows = [*latents, *(self.config.latent_dim + i for i in latents)]
        with torch.no_grad():
            self.encoder.latent.weight[rows] = 0.0
            self.encoder.latent.bias[rows] = 0.0
        return rows

    def log_scale(self, z: Tensor) -> Tensor | None:
        """Log of the decoder's displacement scale, (batch,), or None (paper network)."""
        if not self.config.scale_equivariant:
            return None
        with full_precision(z):
            return self.scale_head(z)[:, 0]

    def law(self, head_output: Tensor, log_scale: Tensor | None) -> Prediction:
        """The ``"window"`` WaveNet's head output (batch, dim * params, n), in the decoder's
        units -> law of n displacements in displacement units."""
        k = self.config.n_mixtures
        out = head_output.reshape(head_output.shape[0], self.config.dim, -1, head_output.shape[-1])
        log_weight = torch.log_softmax(out[:, :, 2 * k :], dim=2) if k > 1 else None
        return self._rescaled(out[:, :, :k], out[:, :, k : 2 * k], log_weight, log_scale)

    def whole_law(
        self,
        head_output: Tensor,
        windows: Tensor,
        memory_mean: Tensor,
        log_scale: Tensor | None,
        ageing: Tensor | None = None,
    ) -> Prediction:
        """The ``"whole"`` WaveNet's head output (batch, 1 + w, n): log sigma, then the
        coefficients of the w = ``linear_window`` displacements before each predicted one,
        ``windows`` (batch, dim, n, w), oldest first; and the memories' part of the mean
        (batch, dim, n); all in the decoder's units; ``ageing`` (batch, n) added to log sigma
        (:meth:`ageing_of`) -> law of n displacements in displacement units."""
        with full_precision(head_output):
            linear = torch.einsum("bdnj,bjn->bdn", windows, head_output[:, 1:])
            mean = linear + memory_mean
            log_sigma = head_output[:, :1].expand_as(mean)
            if ageing is not None:
                log_sigma = log_sigma + ageing[:, None]
        return self._rescaled(mean[:, :, None], log_sigma[:, :, None], None, log_scale)

    def ageing_of(self, z: Tensor, times: Tensor) -> Tensor | None:
        """``ageing``: the log scale of steps ``times`` (n,) relative to the first,
        :func:`ageing_log_scale` of the exponent ``a = exp(h(z))`` (1 at initialisation),
        (batch, n); None without it. SBM's steps have variance ``2 D ((t+1)^alpha -
        t^alpha)``: its law at every time, the first steps and those after the training
        length included, then needs one number from the latent, not a fit of the time
        features."""
        if not self.config.ageing:
            return None
        with full_precision(z):
            exponent = torch.exp(self.ageing_head(z)[:, 0].clamp(-4.0, 1.5))
            return ageing_log_scale(exponent, times.to(z.device))

    def _rescaled(self, mean, log_sigma, log_weight, log_scale) -> Prediction:
        """Undo the decoder's scale; tensors (batch, dim, K, n)."""
        if log_scale is not None:
            mean = mean * torch.exp(log_scale)[:, None, None, None]
            log_sigma = log_sigma + log_scale[:, None, None, None]
        return Prediction(mean, log_sigma.clamp_min(self.config.log_sigma_min), log_weight)

    def predict(self, x: Tensor, z: Tensor) -> Prediction:
        """Law of displacements ``first_predicted_step .. L - 1`` of ``x`` (batch, dim, L)
        given the latent ``z`` (batch, latent_dim)."""
        if self.config.decoder == "whole":
            return self._predict_whole(x, z)
        condition = self.upsampler(z, x.shape[-1])  # column t conditions displacement t
        log_scale = self.log_scale(z)
        past = x[..., :-1]
        if log_scale is not None:
            past = past * torch.exp(-log_scale)[:, None, None]
        return self.law(self.decoder(past, condition), log_scale)

    def condition_at(self, z: Tensor, times: Tensor) -> TimeCondition:
        """The ``"whole"`` decoder's conditioning of displacements ``times`` (n,; negative:
        the padding before the start)."""
        return self.latent_code(z, times)

    def _predict_whole(self, x: Tensor, z: Tensor) -> Prediction:
        rf, length = self.receptive_field, x.shape[-1]
        log_scale = self.log_scale(z)
        if log_scale is not None:
            x = x * torch.exp(-log_scale)[:, None, None]  # the decoder's units
        # Column j of the padded input holds step j - rf, zeros (and mark 0) before the start;
        # output column t then sees steps t - rf .. t - 1.
        observed = torch.ones_like(x[:, :1])
        features = invariant_features(x) if self.config.reads_past else x.new_zeros(len(x), 2, 1)
        features = features.expand(-1, -1, length)
        past = F.pad(torch.cat([features, observed], dim=1)[..., :-1], (rf, 0))
        condition = self.condition_at(z, torch.arange(1 - rf, length))
        head = self.decoder(past, condition)
        ageing = self.ageing_of(z, torch.arange(length))
        lags = self.config.linear_window
        if self.config.memory == "fractional":
            fractional = self.fractional_memory(x, z)
            windows = past_windows(x + fractional, lags)
            return self.whole_law(head, windows, -fractional, log_scale, ageing)
        memories = exponential_memories(x, self.config.memory_timescales)
        memory_mean = (self.memory_weights(condition.last(length)) * memories).sum(dim=2)
        return self.whole_law(head, past_windows(x, lags), memory_mean, log_scale, ageing)

    def fractional_order(self, z: Tensor) -> Tensor:
        """``memory="fractional"``: the order d (batch,) of the differencing, |d| <
        :data:`FRACTIONAL_ORDER_MAX`, a function of the latent only (0 at initialisation)."""
        with full_precision(z):
            return FRACTIONAL_ORDER_MAX * torch.tanh(self.order_head(z)[:, 0])

    def fractional_tail_weights(self, d: Tensor) -> Tensor:
        """Orders (batch,) -> weights of the delayed memories (batch, K): the rows of
        :func:`fractional_tail_table` interpolated linearly in d."""
        table = self.tail_table
        position = (d + FRACTIONAL_ORDER_MAX) / FRACTIONAL_ORDER_STEP
        position = position.clamp(0, len(table) - 1 - 1e-4)
        low = position.detach().floor().long()
        fraction = (position - low)[:, None]
        return table[low] * (1 - fraction) + table[low + 1] * fraction

    def fractional_memory(self, x: Tensor, z: Tensor) -> Tensor:
        """``memory="fractional"``: ``sum_(j >= 1) pi_j(d) x_(t-j)`` for each step of ``x``
        (batch, dim, L), in the decoder's units -> (batch, dim, L). The displacements are
        ``x_t = y_t - that``, with ``y = (1 - B)^d x`` a process of short memory whose law the
        WaveNet gives (the mean a linear combination of the ``receptive_field`` last y, as for
        an ARFIMA process). So the memory of the whole past has one parameter, d, which every
        step's likelihood measures, and the law at lags far beyond the training length is
        fixed by it: fractional Gaussian noise of Hurst exponent H has, at long lags, the
        memory of d = H - 1/2. Lags up to the receptive field are summed exactly; the
        longer ones by memories delayed by the receptive field (:func:`exponential_memories`
        of the past before ``t - receptive_field``, one multiply-add per step when generating)
        weighted by :meth:`fractional_tail_weights`."""
        rf, length = self.receptive_field, x.shape[-1]
        with full_precision(x):
            x = x.to(torch.promote_types(x.dtype, torch.float32))
            d = self.fractional_order(z)
            coefficients = fractional_coefficients(d, rf).flip(1)  # oldest first
            recent = torch.einsum("bdnj,bj->bdn", past_windows(x, rf), coefficients)
            delayed = exponential_memories(
                F.pad(x, (rf, 0))[..., :length], self.config.memory_timescales
            )
            tail = torch.einsum("bdkn,bk->bdn", delayed, self.fractional_tail_weights(d))
            return recent + tail

    def forward(
        self,
        x: Tensor,
        sample: bool = True,
        train_encoder: bool = True,
        encode_steps: int | None = None,
    ) -> dict:
        """Encode, sample z (its mean when ``sample`` is False), decode. Returns ``mu``,
        ``logvar``, ``z``, ``nll`` (batch,: mean NLL per predicted displacement component) and
        ``kl`` (batch, latent_dim: KL of each latent to N(0, 1)); with ``train_encoder`` False,
        no gradient reaches the encoder. ``encode_steps``: encode only the first that many
        displacements (the decoder still scores them all)."""
        with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
            encoded = self.encode(x if encode_steps is None else x[..., :encode_steps])
            mu, logvar = (t.to(x.dtype) for t in encoded)  # float32 under autocast
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        prediction = self.predict(x, z)
        with full_precision(x):
            nll = -prediction.log_prob(x[..., self.first_predicted_step :]).mean(dim=(1, 2))
        return {"mu": mu, "logvar": logvar, "z": z, "nll": nll, "kl": kl_to_prior(mu, logvar)}

    def loss(
        self,
        x: Tensor,
        beta: float | Tensor,
        decorrelation: float | Tensor = 0.0,
        reference_steps: int | None = None,
        decoder_only: bool = False,
        encode_steps: int | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """beta-VAE loss: mean NLL per predicted displacement + beta * KL summed over latents,
        both averaged over the batch, + ``decorrelation`` * :func:`latent_covariance` (a
        training device of some plans' stages; 0 is the paper's loss). ``beta`` and
        ``decorrelation`` may be 0-dim tensors (:mod:`minrep.cudagraph`). Returns the loss and
        the terms (detached; ``nll`` the mean per predicted displacement).

        ``reference_steps``: the NLL term is the sum over the predicted steps divided by this
        count (that of a whole training trajectory) instead of their mean. For a batch cut to
        a prefix this keeps every displacement worth the same against the KL: with the mean, a
        prefix of n steps would weigh each of its steps (n_whole / n) times more, and the
        latents would pay to carry the values of its first steps (measured: 5 latents
        survive beta 4e-3 for FBM, docs/whole-decoder.md).

        ``decoder_only``: the decoder's NLL at the posterior mean alone, no gradient to the
        encoder (:class:`minrep.schedule.Stage`); with ``encode_steps``, the posterior mean of
        each trajectory's first that many displacements."""
        if encode_steps is not None and not decoder_only:
            raise ValueError("encode_steps belongs to the decoder-only loss")
        out = self(
            x, sample=not decoder_only, train_encoder=not decoder_only, encode_steps=encode_steps
        )
        nll = out["nll"].mean()
        kl_per_latent = out["kl"].mean(dim=0)
        predicted = x.shape[-1] - self.first_predicted_step
        weight = 1.0 if reference_steps is None else predicted / reference_steps
        if decoder_only:
            return nll * weight, {"nll": nll.detach(), "kl_per_latent": kl_per_latent.detach()}
        loss = nll * weight + beta * kl_per_latent.sum()
        if isinstance(decorrelation, Tensor) or decorrelation:  # a tensor: no sync (CUDA graph)
            loss = loss + decorrelation * latent_covariance(out["mu"])
        return loss, {"nll": nll.detach(), "kl_per_latent": kl_per_latent.detach()}
