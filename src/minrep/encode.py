"""Encoding: the latent mean and log-variance of each trajectory under a trained model.

What a model is given must fit its float32 arithmetic, and what it returns is checked: every
latent written is finite, or the trajectories whose latents are not are named.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from minrep import MinrepError, io
from minrep.model import VAE, ModelConfig, forward_batch_size
from minrep.progress import bar

FLOAT32 = np.finfo(np.float32)
# A scale-equivariant encoder divides by each trajectory's RMS displacement, computed in
# float32 as the square root of a sum of squares: the sum must not overflow (a margin of 4
# for the order of summation) and the mean square must be a normal float32, not a denormal
# or zero (the RMS would be garbage, and the latents with it).
MAX_SUM_OF_SQUARES = float(FLOAT32.max) / 4
MIN_MEAN_SQUARE = float(FLOAT32.tiny)


class EncodingError(MinrepError, ValueError):
    """Trajectories that this model cannot encode."""


def _source(trajectories: io.Trajectories, source) -> str:
    return str(source or trajectories.meta.get("source") or "trajectories")


def check_scale(
    trajectories: io.Trajectories,
    config: ModelConfig,
    source=None,
    name: Callable[[int], str] | None = None,
    stacklevel: int = 2,
) -> None:
    """Refuse trajectories that a model of ``config`` cannot hold in float32 (a
    scale-equivariant model: the RMS displacement, about 1e-19 .. 1e17); warn, naming
    them, about trajectories that do not move (every displacement zero: the latents then
    describe no motion) and, in 2D/3D, about axes along which a trajectory never moves.
    ``name(i)``: how messages name trajectory ``i``."""
    source = _source(trajectories, source)
    name = name or (lambda i: io.trajectory_name(trajectories, i))
    axis_sq = _sums_of_squares(trajectories.displacements)  # (n, dim)
    sum_sq = axis_sq.sum(axis=1)
    mean_sq = sum_sq / np.maximum(trajectories.step_counts() * trajectories.dim, 1)
    if config.scale_equivariant:
        too_large = np.flatnonzero(sum_sq > MAX_SUM_OF_SQUARES)
        if too_large.size:
            i = int(too_large[0])
            raise EncodingError(
                f"{source}: the displacements of {_which(too_large, name)} are too large "
                f"for the model's float32 arithmetic; express the data in larger units (RMS "
                f"displacement {np.sqrt(mean_sq[i]):.3g} in trajectory {name(i)}: the sum of "
                f"its squared displacements, {sum_sq[i]:.3g}, must stay below "
                f"{MAX_SUM_OF_SQUARES:.3g})"
            )
        too_small = np.flatnonzero((mean_sq > 0) & (mean_sq < MIN_MEAN_SQUARE))
        if too_small.size:
            i = int(too_small[0])
            raise EncodingError(
                f"{source}: the displacements of {_which(too_small, name)} are too small "
                f"for the model's float32 arithmetic; express the data in smaller units (RMS "
                f"displacement {np.sqrt(mean_sq[i]):.3g} in trajectory {name(i)}: its mean "
                f"squared displacement, {mean_sq[i]:.3g}, must be at least "
                f"{MIN_MEAN_SQUARE:.3g})"
            )
    still = np.flatnonzero(sum_sq == 0)
    if still.size:
        warnings.warn(
            f"{source}: {_which(still, name)} never move{'s' * (still.size == 1)} (every "
            f"displacement zero: a constant position); the latents of a trajectory that never "
            f"moves describe no motion",
            stacklevel=stacklevel + 1,
        )
    if trajectories.dim > 1:
        axis_still = (axis_sq == 0) & (sum_sq > 0)[:, None]
        rows = np.flatnonzero(axis_still.any(axis=1))
        if rows.size:
            axes = ", ".join(io.COORDINATES[a] for a in np.flatnonzero(axis_still[rows[0]]))
            warnings.warn(
                f"{source}: {_which(rows, name)} never move{'s' * (rows.size == 1)} along some "
                f"axis (trajectory {name(int(rows[0]))} along {axes}): motion in fewer dimensions "
                f"than the model's {trajectories.dim}",
                stacklevel=stacklevel + 1,
            )


def _sums_of_squares(displacements: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Sum of squared displacements of each trajectory and axis, in float64, ``(n, dim)``;
    NaN (padding: the container holds no other) counts as zero. A chunk at a time."""
    sums = np.empty(displacements.shape[:2])
    for lo in range(0, len(displacements), chunk):
        part = displacements[lo : lo + chunk].astype(np.float64)
        sums[lo : lo + chunk] = np.nansum(part * part, axis=2)
    return sums


def _which(rows: np.ndarray, name: Callable[[int], str], limit: int = 5) -> str:
    """``trajectory 3 (particle 8)`` or ``7 trajectories (1, 3, 4, 5, 6 and 2 more)``."""
    if rows.size == 1:
        return f"trajectory {name(int(rows[0]))}"
    names = ", ".join(name(int(i)) for i in rows[:limit])
    more = f" and {rows.size - limit} more" if rows.size > limit else ""
    return f"{rows.size} trajectories ({names}{more})"


def encode(
    model: VAE,
    trajectories: io.Trajectories,
    batch_size: int | None = None,
    progress: bool = False,
    source=None,
) -> dict[str, np.ndarray]:
    """Latent ``mu`` and ``logvar``, ``(n, latent_dim)`` float32 each, of every trajectory.

    Trajectories of different lengths are encoded in groups of equal length (the encoder
    pools over time, so each one is encoded exactly as it would be alone). Displacements the
    model cannot hold in float32 are refused, trajectories that never move get a warning
    (:func:`check_scale`), and latents that come out NaN or infinite are an
    :class:`EncodingError` naming their trajectories. ``source`` names the data in messages
    (default: ``meta["source"]``, which tracking files set)."""
    return _encode(model, trajectories, batch_size, progress, source, None)


@torch.no_grad()
def _encode(model, trajectories, batch_size, progress, source, name) -> dict[str, np.ndarray]:
    """:func:`encode`, trajectory ``i`` named ``name(i)`` in messages."""
    config = model.config
    source = _source(trajectories, source)
    name = name or (lambda i: io.trajectory_name(trajectories, i))
    if trajectories.dim != config.dim:
        raise EncodingError(
            f"{source}: the model was trained on dim {config.dim}, these trajectories have dim "
            f"{trajectories.dim}"
        )
    io.check_min_steps(trajectories, config.min_steps, source)
    # user -> encode (or encode_axes) -> no_grad's wrapper -> _encode -> check_scale
    check_scale(trajectories, config, source, name, stacklevel=4)
    device = next(model.parameters()).device
    batch_size = batch_size or forward_batch_size(device)
    n = len(trajectories)
    mu = np.empty((n, config.latent_dim), dtype=np.float32)
    logvar = np.empty_like(mu)
    model.eval()
    with bar(total=n, desc="encode", enabled=progress, unit="traj") as done:
        for length, index in trajectories.groups_by_length():
            for lo in range(0, index.size, batch_size):
                rows = index[lo : lo + batch_size]
                x = torch.from_numpy(trajectories.displacements[rows, :, :length]).to(device)
                m, v = model.encode(x)
                mu[rows], logvar[rows] = m.cpu().numpy(), v.cpu().numpy()
                done.update(rows.size)
    bad = np.flatnonzero(~(np.isfinite(mu) & np.isfinite(logvar)).all(axis=1))
    if bad.size:
        largest = float(np.nanmax(np.abs(trajectories.displacements[bad])))
        raise EncodingError(
            f"{source}: the model gives latents that are not finite (NaN or infinity) for "
            f"{_which(bad, name)}, largest displacement among them {largest:.3g}: data "
            f"in other units, or a broken model?"
        )
    return {"mu": mu, "logvar": logvar}


def encode_axes(
    model: VAE,
    trajectories: io.Trajectories,
    batch_size: int | None = None,
    progress: bool = False,
    source=None,
) -> dict[str, np.ndarray]:
    """A 1D model on trajectories of ``dim`` > 1: each coordinate's displacements encoded as
    one 1D trajectory. Returns ``mu`` and ``logvar`` ``(n, dim, latent_dim)``, and where every
    pair of axes agrees (posterior means within 3 combined posterior standard deviations on
    every latent) the precision-weighted combination ``mu_combined``, ``logvar_combined``
    ``(n, latent_dim)`` (NaN for the trajectories whose axes disagree, flagged by
    ``axes_agree``). Axis-by-axis encoding assumes isotropic, independent motion per axis."""
    if model.config.dim != 1:
        raise EncodingError("axis-by-axis encoding is for 1D models")
    n, dim = len(trajectories), trajectories.dim
    flat = io.Trajectories(
        trajectories.displacements.reshape(n * dim, 1, -1),
        lengths=None if trajectories.lengths is None else np.repeat(trajectories.lengths, dim),
    )

    def name(k: int) -> str:  # flat row k: axis k % dim of trajectory k // dim
        return f"{io.trajectory_name(trajectories, k // dim)} along {io.COORDINATES[k % dim]}"

    latents = _encode(model, flat, batch_size, progress, _source(trajectories, source), name)
    mu = latents["mu"].reshape(n, dim, -1)
    logvar = latents["logvar"].reshape(n, dim, -1)
    var = np.exp(logvar.astype(np.float64))
    agree = np.ones(n, dtype=bool)
    for i in range(dim):
        for j in range(i + 1, dim):
            gap = np.abs(mu[:, i] - mu[:, j]) / np.sqrt(var[:, i] + var[:, j])
            agree &= (gap < 3).all(axis=1)
    precision = 1 / var
    combined_var = 1 / precision.sum(axis=1)
    combined_mu = (mu * precision).sum(axis=1) * combined_var
    combined_mu[~agree] = np.nan
    combined_var[~agree] = np.nan
    return {
        "mu": mu,
        "logvar": logvar,
        "mu_combined": combined_mu.astype(np.float32),
        "logvar_combined": np.log(combined_var).astype(np.float32),
        "axes_agree": agree,
    }


def save_latents(latents: dict[str, np.ndarray], trajectories: io.Trajectories, path) -> Path:
    """Write latents with the trajectories' labels: ``.npz`` (arrays ``mu``, ``logvar`` and
    each label) or ``.csv`` (one row per trajectory: labels, ``mu_i``, ``logvar_i``). Latents
    that are not finite are refused, naming their trajectories, and nothing is written (the
    combined latents of :func:`encode_axes` are NaN by design where the axes disagree)."""
    path = Path(path)
    suffix = path.suffix.lower()
    _check_latents(latents, trajectories, path)
    if suffix == ".npz":
        io.write_npz(path, {**latents, **_labels(trajectories)})
    elif suffix == ".csv":
        table = pd.DataFrame(_labels(trajectories))
        for name, values in latents.items():
            if values.ndim == 1:
                table[name] = values
            elif values.ndim == 2:
                for i in range(values.shape[1]):
                    table[f"{name}_{i}"] = values[:, i]
            else:  # per axis: mu_x_0, mu_y_0, ...
                for axis in range(values.shape[1]):
                    for i in range(values.shape[2]):
                        table[f"{name}_{io.COORDINATES[axis]}_{i}"] = values[:, axis, i]
        with io.atomic_write(path, suffix=".csv") as tmp:
            table.to_csv(tmp, index=False)
    else:
        raise io.TrajectoryFileError(f"{path}: latents are written as .npz or .csv")
    return path


def _check_latents(latents: dict[str, np.ndarray], trajectories: io.Trajectories, path) -> None:
    agree = latents.get("axes_agree")
    for key, values in latents.items():
        values = np.asarray(values)
        if len(values) != len(trajectories):
            raise EncodingError(
                f"{path}: {key!r} has {len(values)} rows for {len(trajectories)} trajectories"
            )
        if not np.issubdtype(values.dtype, np.floating):
            continue
        finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
        if key.endswith("_combined") and agree is not None:
            finite |= ~np.asarray(agree, dtype=bool)  # NaN where the axes disagree
        bad = np.flatnonzero(~finite)
        if bad.size:
            raise EncodingError(
                f"{path}: not written: {key!r} is not finite (NaN or infinity) for "
                f"{bad.size} trajector{'y' if bad.size == 1 else 'ies'}: "
                f"{io.trajectory_names(trajectories, bad)}"
            )


def _labels(trajectories: io.Trajectories) -> dict[str, np.ndarray]:
    """Per-trajectory columns of a latents file: the index in the input, its labels and its
    number of displacements."""
    return {
        "trajectory": np.arange(len(trajectories)),
        **trajectories.labels,
        "n_steps": trajectories.step_counts(),
    }
