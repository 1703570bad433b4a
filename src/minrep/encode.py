"""Encoding: the latent mean and log-variance of each trajectory under a trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from minrep import MinrepError, io
from minrep.model import VAE
from minrep.progress import bar


class EncodingError(MinrepError, ValueError):
    """Trajectories that this model cannot encode."""


@torch.no_grad()
def encode(
    model: VAE, trajectories: io.Trajectories, batch_size: int = 1024, progress: bool = False
) -> dict[str, np.ndarray]:
    """Latent ``mu`` and ``logvar``, ``(n, latent_dim)`` float32 each, of every trajectory.

    Trajectories of different lengths are encoded in groups of equal length (the encoder
    pools over time, so each one is encoded exactly as it would be alone)."""
    config = model.config
    if trajectories.dim != config.dim:
        raise EncodingError(
            f"the model was trained on dim {config.dim}, these trajectories have dim "
            f"{trajectories.dim}"
        )
    io.check_min_steps(trajectories, config.min_steps, "trajectories")
    device = next(model.parameters()).device
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
    return {"mu": mu, "logvar": logvar}


def encode_axes(
    model: VAE, trajectories: io.Trajectories, batch_size: int = 1024, progress: bool = False
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
    latents = encode(model, flat, batch_size, progress)
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
    each label) or ``.csv`` (one row per trajectory: labels, ``mu_i``, ``logvar_i``)."""
    path = Path(path)
    suffix = path.suffix.lower()
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


def _labels(trajectories: io.Trajectories) -> dict[str, np.ndarray]:
    """Per-trajectory columns of a latents file: the index in the input, its labels and its
    number of displacements."""
    return {
        "trajectory": np.arange(len(trajectories)),
        **trajectories.labels,
        "n_steps": trajectories.step_counts(),
    }
