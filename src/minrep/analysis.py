"""What a trained model learned: surviving latents, how well they give the physical parameters,
and how close its likelihood comes to the exact one."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from minrep import io, processes
from minrep.encode import encode
from minrep.model import VAE, kl_to_prior, surviving


def latent_statistics(mu: np.ndarray, logvar: np.ndarray) -> dict:
    """Per latent (arrays of shape ``(latent_dim,)``): mean KL to N(0, 1) over the data, the
    variance of the posterior means and the mean log-variance; and the surviving latents (mean
    KL above :data:`minrep.model.SURVIVAL_KL`)."""
    kl_per_latent = kl_to_prior(torch.from_numpy(mu), torch.from_numpy(logvar)).mean(0).numpy()
    return {
        "kl_per_latent": kl_per_latent,
        "var_mu": mu.var(axis=0),
        "mean_logvar": logvar.mean(axis=0),
        "surviving": surviving(kl_per_latent),
    }


def _polynomial_features(x: np.ndarray, degree: int) -> np.ndarray:
    """All monomials of the columns of ``x`` up to ``degree`` (with the constant)."""
    columns = [np.ones(len(x))]
    for d in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(x.shape[1]), d):
            columns.append(np.prod(x[:, combo], axis=1))
    return np.stack(columns, axis=1)


def readout_r2(features: np.ndarray, target: np.ndarray, degree: int = 3, seed: int = 0) -> float:
    """R^2 on a held-out half of a polynomial least-squares readout of ``target`` (n,) from
    ``features`` (n, k), fitted on the other half: how much of a parameter the features carry.
    With no feature it is 0 by construction."""
    n = len(target)
    order = np.random.default_rng(seed).permutation(n)
    fit, score = order[: n // 2], order[n // 2 :]
    if features.shape[1] == 0:
        return 0.0
    scale = features[fit].std(axis=0) + 1e-12
    x = (features - features[fit].mean(axis=0)) / scale
    design = _polynomial_features(x, degree)
    coef, *_ = np.linalg.lstsq(design[fit], target[fit], rcond=None)
    residual = target[score] - design[score] @ coef
    return float(1 - np.mean(residual**2) / np.var(target[score]))


@torch.no_grad()
def model_nll(model: VAE, data: io.Trajectories, batch_size: int = 1024) -> np.ndarray:
    """Mean NLL per predicted displacement of each trajectory, ``(n,)``, with the latent at its
    posterior mean (the deterministic code)."""
    out = np.empty(len(data))
    device = next(model.parameters()).device
    for lo in range(0, len(data), batch_size):
        x = torch.from_numpy(data.displacements[lo : lo + batch_size]).to(device)
        out[lo : lo + batch_size] = model(x, sample=False)["nll"].cpu().numpy()
    return out


def evaluate(model: VAE, data: io.Trajectories) -> dict:
    """Surviving latents, readout R^2 of alpha and log10 D, and the NLL gap to the exact NLL
    (steps ``receptive_field ..``) on a labelled set of one length."""
    if data.is_ragged:
        raise io.TrajectoryFileError("the analysis needs trajectories of one length")
    latents = encode(model, data)
    stats = latent_statistics(latents["mu"], latents["logvar"])
    features = latents["mu"][:, stats["surviving"]]
    result = {
        "n": len(data),
        "surviving_latents": stats["surviving"],
        "kl_per_latent": stats["kl_per_latent"].tolist(),
    }
    if data.alpha is not None and np.ptp(data.alpha) > 0:
        result["r2_alpha"] = readout_r2(features, data.alpha)
    if data.D is not None and np.ptp(data.D) > 0:
        result["r2_log10_D"] = readout_r2(features, np.log10(data.D))
    nll = model_nll(model, data)
    result["nll_mean"] = float(nll.mean())
    if data.process in processes.PROCESSES and data.alpha is not None:
        exact = processes.exact_nll(
            data.displacements, data.process, data.alpha, data.D, start=model.receptive_field
        )
        result["exact_nll_mean"] = float(exact.mean())
        result["nll_gap"] = result["nll_mean"] - result["exact_nll_mean"]
    return result


# ---------------------------------------------------------------------------------------------
# Disentanglement scores, continuous-factor forms


def _discretize(values: np.ndarray, bins: int) -> np.ndarray:
    """Equal-count bins of each column (n, k) -> integer codes (n, k)."""
    codes = np.empty(values.shape, dtype=np.int64)
    for j in range(values.shape[1]):
        edges = np.quantile(values[:, j], np.linspace(0, 1, bins + 1)[1:-1])
        codes[:, j] = np.searchsorted(edges, values[:, j], side="right")
    return codes


def _mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information (nat) of two integer codes from their joint histogram."""
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return float(np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])))


def _entropy(codes: np.ndarray) -> float:
    p = np.bincount(codes) / codes.size
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def mig(latents: np.ndarray, factors: np.ndarray, bins: int = 20) -> dict:
    """Mutual information gap (Chen et al. 2018): for each factor, the gap between the two
    latents most informative about it, over the factor's entropy; latents and factors are
    binned into ``bins`` equal-count bins. ``latents`` (n, L), ``factors`` (n, F)."""
    if latents.shape[1] < 2:
        raise ValueError("MIG needs at least two latents")
    z, v = _discretize(latents, bins), _discretize(factors, bins)
    info = np.array(
        [
            [_mutual_information(z[:, i], v[:, j]) for j in range(v.shape[1])]
            for i in range(z.shape[1])
        ]
    )
    top = np.sort(info, axis=0)[::-1]
    per_factor = (top[0] - top[1]) / np.array([_entropy(v[:, j]) for j in range(v.shape[1])])
    return {
        "mig": float(per_factor.mean()),
        "per_factor": per_factor.tolist(),
        "mutual_information": info.tolist(),
    }


def dci(latents: np.ndarray, factors: np.ndarray, seed: int = 0) -> dict:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018) with a
    linear importance matrix: R[i, j] = |standardised least-squares coefficient| of latent i
    for factor j. Informativeness is the mean held-out R^2 of :func:`readout_r2`."""
    x = (latents - latents.mean(0)) / (latents.std(0) + 1e-12)
    y = (factors - factors.mean(0)) / (factors.std(0) + 1e-12)
    coef, *_ = np.linalg.lstsq(np.column_stack([x, np.ones(len(x))]), y, rcond=None)
    importance = np.abs(coef[:-1]) + 1e-12  # (latents, factors)
    n_latents, n_factors = importance.shape
    p_factor = importance / importance.sum(1, keepdims=True)
    disentanglement = 1 + np.sum(p_factor * np.log(p_factor), 1) / np.log(max(n_factors, 2))
    weight = importance.sum(1) / importance.sum()
    p_latent = importance / importance.sum(0, keepdims=True)
    completeness = 1 + np.sum(p_latent * np.log(p_latent), 0) / np.log(max(n_latents, 2))
    r2 = [readout_r2(latents, factors[:, j], seed=seed) for j in range(n_factors)]
    return {
        "disentanglement": float(np.sum(weight * disentanglement)),
        "completeness": float(completeness.mean()),
        "informativeness": float(np.mean(r2)),
        "importance": importance.tolist(),
    }
