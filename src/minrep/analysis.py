"""What a trained model learned: surviving latents, how well they give the physical parameters,
and how close its likelihood comes to the exact one."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from minrep import io, processes, stats
from minrep.encode import encode
from minrep.generate import generate_many
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


MAX_READOUT_DEGREE = 7
MAX_READOUT_TERMS = 300  # bounds the cost with many latents (6 latents: degree <= 4)


def _n_terms(n_features: int, degree: int) -> int:
    return math.comb(n_features + degree, degree)


def choose_degree(x: np.ndarray, target: np.ndarray, seed: int = 0, folds: int = 5) -> int:
    """The polynomial degree of a least-squares readout of ``target`` (n,) from ``x`` (n, k):
    the one of 1 .. :data:`MAX_READOUT_DEGREE` (at most :data:`MAX_READOUT_TERMS` monomials)
    with the smallest ``folds``-fold cross-validated squared error."""
    degrees = [
        d for d in range(2, MAX_READOUT_DEGREE + 1) if _n_terms(x.shape[1], d) <= MAX_READOUT_TERMS
    ]
    degrees = [1, *degrees]
    design = _polynomial_features(x, degrees[-1])  # columns ordered by degree
    fold = np.random.default_rng(seed).permutation(len(target)) % folds
    errors = []
    for degree in degrees:
        columns = design[:, : _n_terms(x.shape[1], degree)]
        error = 0.0
        for k in range(folds):
            train, test = fold != k, fold == k
            coef, *_ = np.linalg.lstsq(columns[train], target[train], rcond=None)
            error += np.sum((columns[test] @ coef - target[test]) ** 2)
        errors.append(error)
    return degrees[int(np.argmin(errors))]


def readout(
    features: np.ndarray, target: np.ndarray, degree: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
    """A polynomial least-squares readout of ``target`` (n,) from ``features`` (n, k), fitted
    on a seeded half of the rows (its degree, unless given, chosen by cross-validation on that
    half: :func:`choose_degree`): returns the other half's row indices, their predictions and
    the degree (the mean of the fitted half and degree 0 when there is no feature)."""
    n = len(target)
    order = np.random.default_rng(seed).permutation(n)
    fit, score = order[: n // 2], order[n // 2 :]
    if features.shape[1] == 0:
        return score, np.full(len(score), target[fit].mean()), 0
    scale = features[fit].std(axis=0) + 1e-12
    x = (features - features[fit].mean(axis=0)) / scale
    if degree is None:
        degree = choose_degree(x[fit], target[fit], seed)
    design = _polynomial_features(x, degree)
    coef, *_ = np.linalg.lstsq(design[fit], target[fit], rcond=None)
    return score, design[score] @ coef, degree


def readout_r2(
    features: np.ndarray, target: np.ndarray, degree: int | None = None, seed: int = 0
) -> float:
    """R^2 on the held-out half of :func:`readout`: how much of a parameter the features
    carry. With no feature it is about 0 by construction."""
    if features.shape[1] == 0:
        return 0.0
    score, predicted, _ = readout(features, target, degree, seed)
    return float(1 - np.mean((target[score] - predicted) ** 2) / np.var(target[score]))


@torch.no_grad()
def model_nll(
    model: VAE, data: io.Trajectories, batch_size: int = 1024, progress: bool = False
) -> np.ndarray:
    """Mean NLL per predicted displacement of each trajectory, ``(n,)``, with the latent at its
    posterior mean (the deterministic code)."""
    out = np.empty(len(data))
    device = next(model.parameters()).device
    starts = range(0, len(data), batch_size)
    for lo in tqdm(starts, desc="likelihood", unit="batch", disable=not progress, leave=False):
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


# ---------------------------------------------------------------------------------------------
# The whole analysis of a model on a labelled test set (minrep analyze)

TRAINING_RANGE = {
    "alpha": (min(processes.PRESETS["paper"].alpha), max(processes.PRESETS["paper"].alpha)),
    "D": (min(processes.PRESETS["paper"].D), max(processes.PRESETS["paper"].D)),
}
"""The parameter range of the paper's training grid. Headline metrics are computed inside it;
the `paper-test` grid reaches beyond it to show extrapolation (Fig. 2a)."""

CLASSICAL_LAGS = stats.CLASSICAL_LAGS

YARDSTICKS = {
    "kl_per_latent": "a latent survives (carries information) when its mean KL to the prior "
    "exceeds 0.1 nat; collapsed latents sit near 0.001 nat, informative ones near 1 nat or more",
    "r2": "R^2 of a readout: 1 is perfect, 0 is no better than the mean; compare it with the "
    "TA-MSD fit and the best possible (bayes_r2: posterior mean from the exact likelihood)",
    "nll_gap": "model NLL minus the exact NLL (nat per displacement): 0 is the best a model can "
    "do; slightly negative is possible because the latent, encoded from the same trajectory, "
    "knows a little about its own noise (not a likelihood bound)",
    "mig": "mutual information gap: 1 when each parameter lives in one latent alone, 0 when "
    "two latents share it equally (SBM's alpha and D are encoded as combinations: low MIG)",
    "dci": "disentanglement, completeness, informativeness, each 0 (worst) to 1 (best)",
    "alpha_g_error": "mean |alpha of generated trajectories - alpha of the input|; the TA-MSD "
    "of exact trajectories of the same size reaches about 0.015",
}
"""One line per reported number that says what a good value is (printed and in the report)."""


@dataclass
class Analysis:
    """``metrics`` (JSON-ready numbers) and ``arrays`` (what the figures draw)."""

    metrics: dict
    arrays: dict


def _in_range_values(values: np.ndarray, key: str, training_range: dict = TRAINING_RANGE):
    """Which ``values`` of parameter ``key`` ("alpha" or "D") lie in the training range."""
    low, high = training_range[key]
    return (values >= low * (1 - 1e-9)) & (values <= high * (1 + 1e-9))


def _in_range(data: io.Trajectories, training_range: dict) -> np.ndarray:
    """Which trajectories have every labelled parameter in the training range."""
    mask = np.ones(len(data), dtype=bool)
    for key in ("alpha", "D"):
        values = getattr(data, key)
        if values is not None:
            mask &= _in_range_values(values, key, training_range)
    return mask


def _cell_means(values: np.ndarray, alpha: np.ndarray, D: np.ndarray):  # noqa: N803
    """Means of ``values`` (n, ...) over each (alpha, D) cell: (n_alpha, n_D, ...)."""
    alphas, a_index = np.unique(alpha, return_inverse=True)
    ds, d_index = np.unique(D, return_inverse=True)
    sums = np.zeros((len(alphas), len(ds), *values.shape[1:]))
    counts = np.zeros((len(alphas), len(ds)))
    np.add.at(sums, (a_index, d_index), values)
    np.add.at(counts, (a_index, d_index), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts.reshape(counts.shape + (1,) * (values.ndim - 1))
    return alphas, ds, means


def _pick(groups: np.ndarray, per_group: int, rng) -> np.ndarray:
    """Up to ``per_group`` row indices of each distinct value of ``groups`` (n,), sorted."""
    chosen = []
    for value in np.unique(groups):
        rows = np.flatnonzero(groups == value)
        chosen.append(rng.choice(rows, size=min(per_group, rows.size), replace=False))
    return np.sort(np.concatenate(chosen))


def _nearest(values: np.ndarray, targets) -> list[float]:
    return sorted({float(values[np.argmin(np.abs(values - t))]) for t in targets})


def fbm_generation(
    model, data, mu, mask, *, n_steps=6000, per_alpha=20, max_lag=400, seed=0, progress=False
) -> tuple[dict, dict]:
    """Trajectories of ``n_steps`` generated from the encoded latents of ``per_alpha`` test
    trajectories per alpha (Fig. 3a, 3b). The exponent alpha_g is read from the mean TA-MSD
    (each divided by 2 D of its input) over sliding windows of three lags up to ``max_lag``,
    and, as the paper's insets, from one fit over lags 1-20 (inside the receptive field) and
    one over ``max_lag - 20`` .. ``max_lag`` (far beyond it), against the input alpha."""
    rows = _pick(data.alpha, per_alpha, np.random.default_rng(seed))
    generated = generate_many(
        model, mu[rows], n_steps, seed=seed, batch_size=600, progress=progress
    )
    lags = np.arange(1, max_lag + 1)
    msd = stats.ta_msd(generated, max_lag) / (2 * data.D[rows, None])
    alphas, index = np.unique(data.alpha[rows], return_inverse=True)
    group_msd = np.stack([msd[index == i].mean(0) for i in range(len(alphas))])
    centres, alpha_g = stats.sliding_alpha(lags, group_msd, width=3)
    # The insets of Fig. 3b: one power-law fit of the group TA-MSD over each range of lags.
    short, long = (lags >= 1) & (lags <= 20), (lags >= max_lag - 20) & (lags <= max_lag)
    alpha_short = stats.fit_power_law(lags[short], group_msd[:, short])[0]
    alpha_long = stats.fit_power_law(lags[long], group_msd[:, long])[0]
    inside = _in_range_values(alphas, "alpha")
    shown = _nearest(alphas, (0.4, 1.0, 1.6))
    max_corr = min(100, data.n_steps - 1)
    correlation = {
        a: {
            "generated": stats.displacement_autocorrelation(
                generated[data.alpha[rows] == a], max_corr
            ),
            "input": stats.displacement_autocorrelation(
                data.displacements[data.alpha == a], max_corr
            ),
            "exact": processes.fgn_autocovariance(a, np.arange(max_corr + 1))
            / processes.fgn_autocovariance(a, [0])[0],
        }
        for a in shown
    }
    metrics = {
        "n_generated": int(len(rows)),
        "n_steps": int(n_steps),
        "alpha_g_error_lags_1_20": float(np.mean(np.abs(alpha_short - alphas)[inside])),
        f"alpha_g_error_lags_{max_lag - 20}_{max_lag}": float(
            np.mean(np.abs(alpha_long - alphas)[inside])
        ),
    }
    arrays = {
        "alphas": alphas,
        "window_centres": centres,
        "alpha_g": alpha_g,
        "alpha_g_short": alpha_short,
        "alpha_g_long": alpha_long,
        "max_lag": max_lag,
        "correlation": correlation,
        "receptive_field": model.receptive_field,
    }
    return metrics, arrays


def sbm_generation(model, data, mu, mask, *, per_cell=40, n_D=4, seed=0, progress=False):
    """For every alpha and ``n_D`` values of D inside the training range, ``per_cell``
    trajectories generated from encoded latents after their input's first receptive field of
    displacements, to the training length (Fig. 3c, 3d). alpha_g
    is read from the ageing of the lag-2 TEA-MSD over the last 55 % (:func:`stats.aging_alpha`),
    the same estimator applied to the inputs for reference; D(t) against the exact
    D ((t+1)^alpha - t^alpha)."""
    ds = np.unique(data.D[mask])
    chosen_D = ds[np.linspace(0, len(ds) - 1, min(n_D, len(ds))).round().astype(int)]
    keep = np.isin(data.D, chosen_D)
    cell = np.unique(np.stack([data.alpha, data.D], 1), axis=0, return_inverse=True)[1].ravel()
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(keep)[_pick(cell[keep], per_cell, rng)]
    # SBM ages: where a displacement sits in time matters, and the decoder learned times from
    # its receptive field on. So each trajectory keeps its input's first receptive-field
    # displacements as context and the rest (the training length in all) is generated.
    rf = model.receptive_field
    context = data.displacements[rows, :, :rf]
    generated = np.concatenate(
        [
            context,
            generate_many(
                model,
                mu[rows],
                data.n_steps - rf,
                context=context,
                seed=seed,
                batch_size=600,
                progress=progress,
            ),
        ],
        axis=-1,
    )
    alphas = np.unique(data.alpha)
    alpha_g = np.full((len(alphas), len(chosen_D)), np.nan)
    alpha_input = np.full_like(alpha_g, np.nan)
    for i, a in enumerate(alphas):
        for j, d in enumerate(chosen_D):
            sel = (data.alpha[rows] == a) & (data.D[rows] == d)
            if sel.sum() >= 2:
                alpha_g[i, j] = stats.aging_alpha(generated[sel])
                alpha_input[i, j] = stats.aging_alpha(data.displacements[rows[sel]])
    inside = _in_range_values(alphas, "alpha")
    d_mid = chosen_D[len(chosen_D) // 2]
    shown = _nearest(alphas, (0.4, 1.0, 1.6))
    t = np.arange(data.n_steps)
    diffusion = {
        a: {
            "generated": stats.diffusion_coefficient_t(
                generated[(data.alpha[rows] == a) & (data.D[rows] == d_mid)]
            ),
            "exact": d_mid * ((t + 1.0) ** a - t**a),
        }
        for a in shown
    }
    metrics = {
        "n_generated": int(len(rows)),
        "context": f"the input's first {rf} displacements",
        "alpha_g_error": float(np.nanmean(np.abs(alpha_g - alphas[:, None])[inside])),
        "alpha_input_estimator_error": float(
            np.nanmean(np.abs(alpha_input - alphas[:, None])[inside])
        ),
    }
    arrays = {
        "alphas": alphas,
        "D": chosen_D,
        "alpha_g": alpha_g,
        "alpha_input": alpha_input,
        "diffusion": diffusion,
        "D_shown": d_mid,
        "receptive_field": rf,
    }
    return metrics, arrays


def bm_generation(model, data, mu, mask, *, per_D=200, seed=0, progress=False):
    """Trajectories of the training length generated from the latents of ``per_D`` encoded
    test trajectories per D; D of each from its mean squared displacement / 2 (the maximum
    likelihood estimate for BM), against the input's label and the same estimate of the input."""
    rows = _pick(data.D, per_D, np.random.default_rng(seed))
    generated = generate_many(
        model, mu[rows], data.n_steps, seed=seed, batch_size=600, progress=progress
    )
    d_generated = (generated.astype(np.float64) ** 2).mean(axis=(1, 2)) / 2
    d_input = (data.displacements[rows].astype(np.float64) ** 2).mean(axis=(1, 2)) / 2
    inside = mask[rows]
    error = np.abs(np.log10(d_generated) - np.log10(data.D[rows]))
    metrics = {
        "n_generated": int(len(rows)),
        "log10_D_g_error": float(error[inside].mean()),
        "log10_D_g_vs_input_estimate": float(
            np.abs(np.log10(d_generated) - np.log10(d_input))[inside].mean()
        ),
    }
    return metrics, {"D_label": data.D[rows], "D_generated": d_generated, "D_input": d_input}


GENERATION = {"fbm": fbm_generation, "sbm": sbm_generation, "bm": bm_generation}


def _r2(truth: np.ndarray, estimate: np.ndarray) -> float:
    """Coefficient of determination (NaN estimates count as missing)."""
    return float(1 - np.nanmean((estimate - truth) ** 2) / np.var(truth))


def _bayes_estimates(data, mask, receptive_field, training_range, progress) -> dict:
    """Posterior means of alpha and log10 D (:func:`minrep.stats.bayes_estimate`, uniform prior
    on the training range) of the trajectories in ``mask``, from the steps the decoder predicts
    (``decoder_steps``: what the latents can learn at best) and from all steps (``all_steps``:
    what any estimator can reach at best). Empty for processes without an exact likelihood."""
    if data.process not in processes.PROCESSES:
        return {}
    out = {}
    for steps, start in (("decoder_steps", receptive_field), ("all_steps", 0)):
        alpha, log10_d = stats.bayes_estimate(
            data.displacements[mask],
            data.process,
            training_range["alpha"],
            training_range["D"],
            start=start,
            progress=progress,
        )
        out[steps] = {"alpha": alpha, "log10_D": log10_d}
    return out


def _extrapolation(data, features, mask, training_range, d_hat) -> dict | None:
    """log10 D outside the training range of D (alpha inside its range; Fig. 2a): a linear
    readout fitted on all trajectories inside the training range, applied outside, next to
    the TA-MSD fit on the same trajectories. None when the test set stays inside."""
    alpha_in = _in_range_values(data.alpha, "alpha", training_range)
    outside = alpha_in & ~_in_range_values(data.D, "D", training_range)
    if not outside.any() or features.shape[1] == 0:
        return None
    design = np.column_stack([features, np.ones(len(features))])
    target = np.log10(data.D)
    coef, *_ = np.linalg.lstsq(design[mask], target[mask], rcond=None)
    error = np.abs(design @ coef - target)
    return {
        "n_outside": int(outside.sum()),
        "linear_readout_mae_log10_D_outside": float(error[outside].mean()),
        "linear_readout_mae_log10_D_inside": float(error[mask].mean()),
        "tamsd_mae_log10_D_outside": float(np.nanmean(np.abs(np.log10(d_hat) - target)[outside])),
    }


def analyze(
    model: VAE,
    data: io.Trajectories,
    *,
    seed: int = 0,
    progress: bool = True,
    training_range: dict = TRAINING_RANGE,
    generation: dict | None = None,
) -> Analysis:
    """Everything of ``minrep analyze`` for a model and a labelled test set of one length:
    latent statistics, readouts against the classical TA-MSD fit, MIG and DCI, the NLL against
    the exact one per (alpha, D) cell, and the statistics of trajectories generated from the
    encoded test trajectories. Headline numbers are computed inside ``training_range``."""
    if data.is_ragged:
        raise io.TrajectoryFileError("the analysis needs trajectories of one length")
    if data.dim != model.config.dim:
        raise io.TrajectoryFileError(
            f"the test set has dim {data.dim}, the model was trained on dim {model.config.dim}"
        )
    if data.alpha is None or data.D is None:
        raise io.TrajectoryFileError("the analysis needs a labelled test set (alpha and D)")
    steps = tqdm(total=5, desc="analyze", unit="step", disable=not progress)

    steps.set_postfix_str("encode")
    latents = encode(model, data, progress=progress)
    mu = latents["mu"]
    mask = _in_range(data, training_range)
    if mask.sum() < 2:  # a test set wholly outside the range: judge on all of it
        mask = np.ones(len(data), dtype=bool)
    # The latents are judged on data like the training data; outside the training range a
    # collapsed latent can wake up (extrapolation), reported as kl_per_latent_whole_set.
    latent = latent_statistics(mu[mask], latents["logvar"][mask])
    kept = latent["surviving"]
    metrics = {
        "process": data.process,
        "n": int(len(data)),
        "n_in_training_range": int(mask.sum()),
        "training_range": {k: list(v) for k, v in training_range.items()},
        "surviving_latents": kept,
        "kl_per_latent": latent["kl_per_latent"].tolist(),
        "var_mu": latent["var_mu"].tolist(),
        "mean_logvar": latent["mean_logvar"].tolist(),
        "kl_per_latent_whole_set": latent_statistics(mu, latents["logvar"])[
            "kl_per_latent"
        ].tolist(),
    }
    steps.update()

    steps.set_postfix_str("readout")
    alpha_hat, d_hat = stats.estimate_alpha_D(data.displacements, CLASSICAL_LAGS)
    factors = {"alpha": (data.alpha, alpha_hat), "log10_D": (np.log10(data.D), np.log10(d_hat))}
    for name in list(factors):  # a parameter that does not vary cannot be read out
        if np.ptp(factors[name][0][mask]) == 0:
            del factors[name]
    features = mu[mask][:, kept]
    bayes = _bayes_estimates(data, mask, model.receptive_field, training_range, progress)
    readouts = {}
    for name, (truth, classical) in factors.items():
        score, predicted, degree = readout(features, truth[mask], seed=seed)
        truth_scored, classical_scored = truth[mask][score], classical[mask][score]
        metrics[f"r2_{name}"] = _r2(truth_scored, predicted)
        metrics[f"readout_degree_{name}"] = degree
        metrics[f"readout_mae_{name}"] = float(np.mean(np.abs(predicted - truth_scored)))
        metrics[f"tamsd_mae_{name}"] = float(np.nanmean(np.abs(classical_scored - truth_scored)))
        metrics[f"tamsd_r2_{name}"] = _r2(truth_scored, classical_scored)
        if bayes:
            metrics[f"bayes_r2_{name}"] = {
                steps: _r2(truth_scored, estimate[name][score]) for steps, estimate in bayes.items()
            }
        readouts[name] = {
            "truth": truth_scored,
            "readout": predicted,
            "classical": classical_scored,
            **{f"bayes_{steps}": estimate[name][score] for steps, estimate in bayes.items()},
        }
    metrics["extrapolation"] = _extrapolation(data, mu[:, kept], mask, training_range, d_hat)
    if factors:
        factor_values = np.stack([truth[mask] for truth, _ in factors.values()], 1)
        metrics["mig"] = mig(mu[mask], factor_values)["mig"] if mu.shape[1] > 1 else float("nan")
        scores = dci(mu[mask], factor_values, seed=seed)
        metrics["dci"] = {
            k: scores[k] for k in ("disentanglement", "completeness", "informativeness")
        }
    steps.update()

    steps.set_postfix_str("likelihood")
    nll = model_nll(model, data, progress=progress)
    arrays = {
        "alpha": data.alpha,
        "D": data.D,
        "mu": mu,
        "surviving": kept,
        "mask": mask,
        "readouts": readouts,
        "training_range": training_range,
    }
    metrics["nll_mean"] = float(nll[mask].mean())
    if data.process in processes.PROCESSES:
        exact = processes.exact_nll(
            data.displacements, data.process, data.alpha, data.D, start=model.receptive_field
        )
        metrics["exact_nll_mean"] = float(exact[mask].mean())
        metrics["nll_gap"] = metrics["nll_mean"] - metrics["exact_nll_mean"]
        arrays["exact_nll_cells"] = _cell_means(exact, data.alpha, data.D)[2]
    cell_alpha, cell_D, arrays["nll_cells"] = _cell_means(nll, data.alpha, data.D)
    arrays["mu_cells"] = _cell_means(mu, data.alpha, data.D)[2]
    arrays["cell_alpha"], arrays["cell_D"] = cell_alpha, cell_D
    steps.update()

    steps.set_postfix_str("generate")
    if data.process in GENERATION:
        generated_metrics, arrays["generation"] = GENERATION[data.process](
            model, data, mu, mask, seed=seed, progress=progress, **(generation or {})
        )
        metrics["generation"] = generated_metrics
    steps.update()
    steps.set_postfix_str("done")
    steps.update()
    steps.close()
    return Analysis(metrics, arrays)
