"""What a trained model learned: surviving latents, how well they give the physical parameters,
and how close its likelihood comes to the exact one."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from minrep import datasets, io, processes, stats
from minrep.dimension import (  # noqa: F401  (effective_dimension_of_moments: re-exported)
    SNR_FACTOR,
    EffectiveDimension,
    effective_dimension,
    effective_dimension_of_moments,
    principal_coordinates,
)
from minrep.encode import encode
from minrep.generate import generate_many
from minrep.model import VAE, forward_batch_size, kl_to_prior, surviving
from minrep.progress import bar


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


def polynomial_features(x: np.ndarray, degree: int) -> np.ndarray:
    """All monomials of the columns of ``x`` up to ``degree`` (with the constant)."""
    columns = [np.ones(len(x))]
    for d in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(x.shape[1]), d):
            columns.append(np.prod(x[:, combo], axis=1))
    return np.stack(columns, axis=1)


def intrinsic_dimension(
    mu: np.ndarray, logvar: np.ndarray, factor: float = SNR_FACTOR, degree: int = 3, seed: int = 0
) -> int:
    """The dimension of the manifold of the posterior means, curvature allowed for: the fewest
    of the informative principal directions of :func:`minrep.dimension.effective_dimension`
    (SNR above ``factor``) of which a polynomial (``degree``) gives every other informative
    direction to within ``factor`` times the posterior noise. A curved one-dimensional
    manifold (latent 1 = latent 0 squared) spans two linear directions (effective dimension 2)
    but counts 1 here. It finds manifolds that are a graph over some of the principal
    directions; the polynomials are fitted on a seeded half of the rows and judged on the
    other half."""
    y, snr = principal_coordinates(mu, logvar)
    informative = [int(k) for k in np.flatnonzero(snr > factor)]
    order = np.random.default_rng(seed).permutation(len(y))
    fit, score = order[: len(y) // 2], order[len(y) // 2 :]
    for size in range(len(informative)):
        for chart in itertools.combinations(informative, size):
            if all(
                _left_over(y, list(chart), k, degree, fit, score) <= factor
                for k in informative
                if k not in chart
            ):
                return size
    return len(informative)


def _left_over(y, chart: list[int], k: int, degree: int, fit, score) -> float:
    """Variance of principal coordinate ``k`` (in units of the posterior noise) on the rows
    ``score`` once a polynomial of the coordinates ``chart`` fitted on ``fit`` is taken out."""
    target = y[:, k]
    if not chart:
        return float(np.var(target[score]))
    x = y[:, chart]
    x = (x - x[fit].mean(axis=0)) / (x[fit].std(axis=0) + 1e-12)
    design = polynomial_features(x, degree)
    coef, *_ = np.linalg.lstsq(design[fit], target[fit], rcond=None)
    return float(np.var(target[score] - design[score] @ coef))


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
    design = polynomial_features(x, degrees[-1])  # columns ordered by degree
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
    design = polynomial_features(x, degree)
    coef, *_ = np.linalg.lstsq(design[fit], target[fit], rcond=None)
    return score, design[score] @ coef, degree


def r_squared(truth: np.ndarray, estimate: np.ndarray) -> float:
    """Coefficient of determination of ``estimate`` against ``truth``: 1 - mean squared error
    / variance of the truth (NaN estimates count as missing). 1 is perfect, 0 is no better
    than the mean of the truth."""
    return float(1 - np.nanmean((estimate - truth) ** 2) / np.var(truth))


def readout_r2(
    features: np.ndarray, target: np.ndarray, degree: int | None = None, seed: int = 0
) -> float:
    """R^2 (:func:`r_squared`) on the held-out half of :func:`readout`: how much of a
    parameter the features carry. With no feature it is about 0 by construction."""
    if features.shape[1] == 0:
        return 0.0
    score, predicted, _ = readout(features, target, degree, seed)
    return r_squared(target[score], predicted)


@torch.no_grad()
def model_nll(
    model: VAE, data: io.Trajectories, batch_size: int | None = None, progress: bool = False
) -> np.ndarray:
    """Mean NLL per predicted displacement of each trajectory, ``(n,)``, with the latent at its
    posterior mean (the deterministic code); ``batch_size`` by default
    :func:`minrep.model.forward_batch_size`."""
    out = np.empty(len(data))
    device = next(model.parameters()).device
    batch_size = batch_size or forward_batch_size(device)
    starts = range(0, len(data), batch_size)
    for lo in bar(starts, desc="likelihood", enabled=progress, nested=True, unit="batch"):
        x = torch.from_numpy(data.displacements[lo : lo + batch_size]).to(device)
        out[lo : lo + batch_size] = model(x, sample=False)["nll"].cpu().numpy()
    return out


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
# The training range: where a model is judged

PAPER_TRAINING_RANGE = {
    "alpha": (min(datasets.PRESETS["paper"].alpha), max(datasets.PRESETS["paper"].alpha)),
    "D": (min(datasets.PRESETS["paper"].D), max(datasets.PRESETS["paper"].D)),
}
"""The parameter range of the paper's training grid: the range of a model that did not record
its own. The `paper-test` grid reaches beyond it to show extrapolation (Fig. 2a)."""


@dataclass(frozen=True)
class TrainingRange:
    """The (alpha, D) range of a model's training data, inclusive; ``recorded`` is False when
    it is assumed (the paper's grid) because the model did not record it."""

    alpha: tuple[float, float]
    D: tuple[float, float]
    recorded: bool = True

    @classmethod
    def of(cls, model: VAE, given: dict | TrainingRange | None = None) -> TrainingRange:
        """``given`` (``{"alpha": [lo, hi], "D": [lo, hi]}``), else the model's
        ``training_range``, else the paper's grid (not recorded)."""
        if isinstance(given, TrainingRange):
            return given
        recorded = given if given is not None else getattr(model, "training_range", None)
        values = PAPER_TRAINING_RANGE if recorded is None else recorded
        alpha, d = ((float(values[k][0]), float(values[k][1])) for k in ("alpha", "D"))
        return cls(alpha, d, recorded is not None)

    def contains(self, key: str, values: np.ndarray) -> np.ndarray:
        """Which ``values`` of parameter ``key`` ("alpha" or "D") lie in the range."""
        low, high = getattr(self, key)
        return (values >= low * (1 - 1e-9)) & (values <= high * (1 + 1e-9))

    def judged(self, data: io.Trajectories) -> np.ndarray:
        """The trajectories the headline numbers are computed on: those with every labelled
        parameter in the range, or all of them when fewer than two are (a test set wholly
        outside the range is judged on all of it)."""
        mask = np.ones(len(data), dtype=bool)
        for key in ("alpha", "D"):
            values = getattr(data, key)
            if values is not None:
                mask &= self.contains(key, values)
        return mask if mask.sum() >= 2 else np.ones(len(data), dtype=bool)

    def to_dict(self) -> dict:
        """``{"alpha": [lo, hi], "D": [lo, hi]}`` (as in ``metrics.json``)."""
        return {"alpha": list(self.alpha), "D": list(self.D)}


CLASSICAL_LAGS = stats.CLASSICAL_LAGS

YARDSTICKS = {
    "latent_meaning": "what each surviving latent encodes: the R^2 of a readout of each label "
    "(alpha, log10 D and, for tracks with a measurement, the reduced localisation error "
    "sigma^2 / (2 D) and the exposure) from that latent alone and from all together; a latent "
    "can encode a combination, so a row may have no R^2 near 1",
    "readout_by_length": "R^2 of readouts fitted on the latents of each trajectory's first n "
    "displacements, beside the best possible from the same n (bayes_r2): short tracks carry "
    "less information, so both fall; the gap between them is the model's",
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
    "alpha_g_error": "mean |alpha_g of generated trajectories - alpha of their inputs|, 0 at "
    "best (FBM recorded with localisation error and blur: minus the same fit of the recorded "
    "process's exact MSD); the same estimate of exact FBM of the same size reaches about "
    "0.005 at lags 1-20 and 0.06 at lags 380-400; for SBM compare with "
    "alpha_input_estimator_error (the inputs)",
    "log10_D_g_error": "mean |log10 D of a generated trajectory - log10 D of its input's "
    "label|; exact BM of the training length reaches about 0.025 (the spread of its own "
    "mean squared displacement)",
    "effective_dimension": "the number of directions of latent space along which the posterior "
    f"means vary more than {SNR_FACTOR:.2f} times the posterior noise (more than 0.1 nat each, "
    "the survival threshold; their signal-to-noise ratios follow, largest first; shipped "
    "models: parameters 0.77 to 1,100, other directions 0.03 or less): the number of "
    "parameters the representation carries, whatever the number of surviving latents; more "
    "surviving latents than this are redundant copies",
    "intrinsic_dimension": "the effective dimension with curvature allowed for: directions "
    "whose spread a polynomial of the stronger ones explains (a curved manifold of means) do "
    "not count; below the effective dimension when the means lie on a curved manifold",
    "extrapolation": "mean |error| of log10 D outside the training range of D by a linear "
    "readout fitted inside, next to the TA-MSD fit: close to it when the latent extrapolates",
}
"""One line per reported number that says what a good value is (printed and in the report)."""


# ---------------------------------------------------------------------------------------------
# The phases of the analysis of a model on a labelled test set (minrep analyze)


@dataclass
class LatentPhase:
    """The encoded test set: posterior means of every trajectory and, over the trajectories
    judged (``mask``), the statistics of :func:`latent_statistics` and the effective dimension
    (:func:`minrep.dimension.effective_dimension`); ``kl_whole_set`` over all of them (outside
    the training range a collapsed latent can wake up: extrapolation)."""

    alpha: np.ndarray  # (n,) labels
    D: np.ndarray  # (n,)
    mu: np.ndarray  # (n, latent_dim)
    mask: np.ndarray  # (n,) bool: judged (inside the training range)
    surviving: list[int]
    kl_per_latent: np.ndarray  # (latent_dim,)
    var_mu: np.ndarray
    mean_logvar: np.ndarray
    kl_whole_set: np.ndarray
    dimension: EffectiveDimension | None = None
    intrinsic: int | None = None  # intrinsic_dimension of the judged posteriors

    def metrics(self) -> dict:
        extra = {}
        if self.dimension is not None:
            extra = {
                "effective_dimension": self.dimension.dimension,
                "effective_dimension_snr": self.dimension.snr,
                "effective_dimension_redundant": self.dimension.redundant,
            }
            if self.intrinsic is not None:
                extra["intrinsic_dimension"] = self.intrinsic
            if self.dimension.message() is not None:
                extra["effective_dimension_note"] = self.dimension.message()
        return {
            "surviving_latents": self.surviving,
            **extra,
            "kl_per_latent": self.kl_per_latent.tolist(),
            "var_mu": self.var_mu.tolist(),
            "mean_logvar": self.mean_logvar.tolist(),
            "kl_per_latent_whole_set": self.kl_whole_set.tolist(),
        }


def latent_phase(model: VAE, data: io.Trajectories, mask: np.ndarray, progress=False):
    """Encode ``data`` and the latent statistics over ``mask``: a :class:`LatentPhase`."""
    latents = encode(model, data, progress=progress)
    mu, logvar = latents["mu"], latents["logvar"]
    judged = latent_statistics(mu[mask], logvar[mask])
    return LatentPhase(
        alpha=data.alpha,
        D=data.D,
        mu=mu,
        mask=mask,
        surviving=judged["surviving"],
        kl_per_latent=judged["kl_per_latent"],
        var_mu=judged["var_mu"],
        mean_logvar=judged["mean_logvar"],
        kl_whole_set=latent_statistics(mu, logvar)["kl_per_latent"],
        dimension=effective_dimension(mu[mask], logvar[mask], judged["surviving"]),
        intrinsic=intrinsic_dimension(mu[mask], logvar[mask]) if mask.sum() >= 4 else None,
    )


@dataclass
class ParameterReadout:
    """Estimates of one parameter on the scored half of the judged test set: the truth, the
    latent readout, the TA-MSD fit and the best possible estimates (by steps used:
    ``decoder_steps``, ``all_steps``; empty without an exact likelihood)."""

    truth: np.ndarray
    readout: np.ndarray
    classical: np.ndarray
    bayes: dict[str, np.ndarray]
    degree: int

    def metrics(self, name: str) -> dict:
        out = {
            f"r2_{name}": r_squared(self.truth, self.readout),
            f"readout_degree_{name}": self.degree,
            f"readout_mae_{name}": float(np.mean(np.abs(self.readout - self.truth))),
            f"tamsd_mae_{name}": float(np.nanmean(np.abs(self.classical - self.truth))),
            f"tamsd_r2_{name}": r_squared(self.truth, self.classical),
        }
        if self.bayes:
            out[f"bayes_r2_{name}"] = {
                steps: r_squared(self.truth, estimate) for steps, estimate in self.bayes.items()
            }
        return out


@dataclass
class ReadoutPhase:
    """What the surviving latents say about alpha and log10 D (``parameters``, by name; a
    parameter that does not vary in the judged set is left out), the extrapolation of D
    (None when the test set stays inside), and MIG and DCI (None without a parameter)."""

    parameters: dict[str, ParameterReadout]
    extrapolation: dict | None
    mig: float | None
    dci: dict | None
    by_length: dict[int, dict | None] = field(default_factory=dict)  # readouts_by_length
    meaning: dict[str, dict[str, float]] = field(default_factory=dict)  # latent_meaning

    def metrics(self) -> dict:
        out = {}
        for name, parameter in self.parameters.items():
            out.update(parameter.metrics(name))
        out["latent_meaning"] = self.meaning
        out["extrapolation"] = self.extrapolation
        out["readout_by_length"] = {str(n): row for n, row in self.by_length.items()}
        if self.mig is not None:
            out["mig"], out["dci"] = self.mig, self.dci
        return out


def _bayes_estimates(data, mask, first_predicted_step, training_range, progress) -> dict:
    """Posterior means of alpha and log10 D (:func:`minrep.stats.bayes_estimate`, uniform prior
    on the training range) of the trajectories in ``mask``, from the steps the decoder predicts
    (``decoder_steps``: what the latents can learn at best) and from all steps (``all_steps``:
    what any estimator can reach at best). Empty for processes without an exact likelihood."""
    if data.process not in processes.PROCESSES:
        return {}
    all_steps = _bayes(data.subset(mask), 0, training_range, progress)
    if first_predicted_step == 0:  # a decoder of every step: one estimate serves both
        return {"decoder_steps": all_steps, "all_steps": all_steps}
    decoder_steps = _bayes(data.subset(mask), first_predicted_step, training_range, progress)
    return {"decoder_steps": decoder_steps, "all_steps": all_steps}


def _known_measurement(data: io.Trajectories) -> dict:
    """The measurement the best possible estimate is given, as the tracks were drawn: the
    error relative to the motion (``reduced_noise``) where it is a label, for it then grows
    with D, else the absolute one."""
    measurement = data.measurement()
    if "reduced_noise" in data.labels:
        measurement["reduced_noise"] = data.labels["reduced_noise"]
        del measurement["noise"]
    return measurement


def _bayes(data, start, training_range, progress) -> dict[str, np.ndarray]:
    """:func:`minrep.stats.bayes_estimate` of every trajectory of ``data`` from step
    ``start`` on: ``{"alpha": ..., "log10_D": ...}``."""
    alpha, log10_d = stats.bayes_estimate(
        data.displacements,
        data.process,
        training_range.alpha,
        training_range.D,
        start=start,
        progress=progress,
        **_known_measurement(data),
    )
    return {"alpha": alpha, "log10_D": log10_d}


TRACK_LENGTHS = (10, 20, 50, 100)
"""Displacements of the track prefixes the readouts are also judged on (issue 10): the short
tracks of single-particle tracking."""


def readouts_by_length(
    model, data, latents, training_range, *, seed: int = 0, progress: bool = False
) -> dict[int, dict | None]:
    """R^2 of each parameter read from the surviving latents of the first n displacements of
    the judged trajectories (a readout fitted for each n, as :func:`readout`), next to the best
    possible from the same n steps (``bayes_r2_*``: :func:`minrep.stats.bayes_estimate`), for
    each n of :data:`TRACK_LENGTHS` shorter than the test set's; None where the model cannot
    encode n displacements (the paper's decoder: n < 33)."""
    judged = data.subset(latents.mask)
    out = {}
    for n in (n for n in TRACK_LENGTHS if n < data.n_steps):
        if n < model.config.min_steps:
            out[n] = None
            continue
        prefix = io.Trajectories(judged.displacements[..., :n], judged.labels, judged.meta)
        features = encode(model, prefix)["mu"][:, latents.surviving]
        exact = data.process in processes.PROCESSES
        best = _bayes(prefix, 0, training_range, progress) if exact else {}
        row = {}
        for name, truth in (("alpha", prefix.alpha), ("log10_D", np.log10(prefix.D))):
            if np.ptp(truth) == 0:
                continue
            score, predicted, _ = readout(features, truth, seed=seed)
            row[f"r2_{name}"] = r_squared(truth[score], predicted)
            if name in best:
                row[f"bayes_r2_{name}"] = r_squared(truth[score], best[name][score])
        out[n] = row
    return out


def _extrapolation(data, features, mask, training_range, d_hat) -> dict | None:
    """log10 D outside the training range of D (alpha inside its range; Fig. 2a): a linear
    readout fitted on all trajectories inside the training range, applied outside, next to
    the TA-MSD fit on the same trajectories. None when the test set stays inside."""
    outside = training_range.contains("alpha", data.alpha) & ~training_range.contains("D", data.D)
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


def readout_phase(
    model: VAE,
    data: io.Trajectories,
    latents: LatentPhase,
    training_range: TrainingRange,
    *,
    seed: int = 0,
    progress: bool = False,
) -> ReadoutPhase:
    """Readouts of alpha and log10 D from the surviving latents (:func:`readout`) on the
    judged trajectories, against the TA-MSD fit and the best possible estimates, and on their
    short prefixes (:func:`readouts_by_length`); the extrapolation of D; MIG and DCI of all
    latents."""
    mask, kept = latents.mask, latents.surviving
    alpha_hat, d_hat = stats.estimate_alpha_D(data.displacements, CLASSICAL_LAGS)
    factors = {
        name: (truth[mask], classical[mask])
        for name, truth, classical in (
            ("alpha", data.alpha, alpha_hat),
            ("log10_D", np.log10(data.D), np.log10(d_hat)),
        )
        if np.ptp(truth[mask]) > 0  # a parameter that does not vary cannot be read out
    }
    features = latents.mu[mask][:, kept]
    bayes = _bayes_estimates(data, mask, model.first_predicted_step, training_range, progress)
    parameters = {}
    for name, (truth, classical) in factors.items():
        score, predicted, degree = readout(features, truth, seed=seed)
        parameters[name] = ParameterReadout(
            truth=truth[score],
            readout=predicted,
            classical=classical[score],
            bayes={steps: estimate[name][score] for steps, estimate in bayes.items()},
            degree=degree,
        )
    extrapolation = _extrapolation(data, latents.mu[:, kept], mask, training_range, d_hat)
    mig_score = dci_scores = None
    if factors:
        mu, values = latents.mu[mask], np.stack([truth for truth, _ in factors.values()], 1)
        mig_score = mig(mu, values)["mig"] if mu.shape[1] > 1 else float("nan")
        scores = dci(mu, values, seed=seed)
        dci_scores = {k: scores[k] for k in ("disentanglement", "completeness", "informativeness")}
    by_length = readouts_by_length(
        model, data, latents, training_range, seed=seed, progress=progress
    )
    meaning = latent_meaning(latents.mu[mask], kept, _factors(data, mask), seed=seed)
    return ReadoutPhase(parameters, extrapolation, mig_score, dci_scores, by_length, meaning)


def _factors(data: io.Trajectories, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The varying labels of the judged trajectories a latent may encode: alpha, log10 D and,
    for tracks simulated with a measurement, the reduced localisation error sigma^2 / (2 D)
    and the exposure."""
    labels = {"alpha": data.alpha, "log10_D": np.log10(data.D)}
    noise = data.labels.get("noise")
    labels["reduced_noise"] = None if noise is None else np.asarray(noise) ** 2 / (2 * data.D)
    labels["exposure"] = data.labels.get("exposure")
    return {
        name: np.asarray(values, dtype=np.float64)[mask]
        for name, values in labels.items()
        if values is not None and np.ptp(np.asarray(values, dtype=np.float64)[mask]) > 0
    }


def latent_meaning(mu, kept, factors: dict[str, np.ndarray], seed: int = 0) -> dict:
    """What each surviving latent encodes: the held-out R^2 of a polynomial readout
    (:func:`readout`) of each factor from that latent alone, and from all surviving latents
    together (key ``"all"``). ``{latent or "all": {factor: R^2}}``; ``mu`` is ``(n, latents)``."""
    columns = {str(int(k)): [int(k)] for k in kept}
    columns["all"] = [int(k) for k in kept]
    return {
        name: {
            factor: readout_r2(mu[:, cols], truth, seed=seed) for factor, truth in factors.items()
        }
        for name, cols in columns.items()
    }


def _cell_means(values: np.ndarray, alpha: np.ndarray, D: np.ndarray):
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


@dataclass
class LikelihoodPhase:
    """The model's NLL per predicted displacement (latent at its posterior mean) against the
    exact one (None for processes without it): means over the judged trajectories, and per
    (alpha, D) cell of the grid ``cell_alpha`` x ``cell_D``, with the mean latents there."""

    nll_mean: float
    exact_nll_mean: float | None
    cell_alpha: np.ndarray  # (n_alpha,)
    cell_D: np.ndarray  # (n_D,)
    nll_cells: np.ndarray  # (n_alpha, n_D)
    exact_nll_cells: np.ndarray | None  # (n_alpha, n_D)
    mu_cells: np.ndarray  # (n_alpha, n_D, latent_dim)
    first_predicted_step: int = 0  # the means are over steps from here on

    def metrics(self) -> dict:
        out = {"first_predicted_step": self.first_predicted_step, "nll_mean": self.nll_mean}
        if self.exact_nll_mean is not None:
            out["exact_nll_mean"] = self.exact_nll_mean
            out["nll_gap"] = self.nll_mean - self.exact_nll_mean
        return out


def likelihood_phase(
    model: VAE, data: io.Trajectories, latents: LatentPhase, progress: bool = False
) -> LikelihoodPhase:
    """:func:`model_nll` and :func:`minrep.processes.exact_nll` (steps from the model's
    first predicted one on) of every trajectory, summarised as a :class:`LikelihoodPhase`."""
    nll, mask = model_nll(model, data, progress=progress), latents.mask
    exact = exact_mean = exact_cells = None
    if data.process in processes.PROCESSES:
        exact = processes.exact_nll(
            data.displacements,
            data.process,
            data.alpha,
            data.D,
            start=model.first_predicted_step,
            **data.measurement(),
        )
        exact_mean = float(exact[mask].mean())
        exact_cells = _cell_means(exact, data.alpha, data.D)[2]
    cell_alpha, cell_d, nll_cells = _cell_means(nll, data.alpha, data.D)
    return LikelihoodPhase(
        nll_mean=float(nll[mask].mean()),
        exact_nll_mean=exact_mean,
        cell_alpha=cell_alpha,
        cell_D=cell_d,
        nll_cells=nll_cells,
        exact_nll_cells=exact_cells,
        mu_cells=_cell_means(latents.mu, data.alpha, data.D)[2],
        first_predicted_step=model.first_predicted_step,
    )


# ---------------------------------------------------------------------------------------------
# Generation: trajectories generated from the encoded test trajectories (Fig. 3)


@dataclass
class Curves:
    """One statistic against lag or time: of generated trajectories, of their inputs (where
    measured) and its exact value."""

    generated: np.ndarray
    exact: np.ndarray
    input: np.ndarray | None = None


def _pick(groups: np.ndarray, per_group: int, rng) -> np.ndarray:
    """Up to ``per_group`` row indices of each distinct value of ``groups`` (n,), sorted."""
    chosen = []
    for value in np.unique(groups):
        rows = np.flatnonzero(groups == value)
        chosen.append(rng.choice(rows, size=min(per_group, rows.size), replace=False))
    return np.sort(np.concatenate(chosen))


def _nearest(values: np.ndarray, targets) -> list[float]:
    return sorted({float(values[np.argmin(np.abs(values - t))]) for t in targets})


@dataclass
class FBMGeneration:
    """Fig. 3a, 3b. ``alpha_g`` (n_alphas, n_windows): exponent of the group TA-MSD over
    sliding windows centred at ``window_centres``; ``alpha_g_short`` and ``alpha_g_long``
    (n_alphas,): one fit over lags 1-20 and one over ``max_lag - 20`` .. ``max_lag``;
    ``correlation``: displacement autocorrelation for a few input alphas."""

    metrics: dict
    alphas: np.ndarray
    window_centres: np.ndarray
    alpha_g: np.ndarray
    alpha_g_short: np.ndarray
    alpha_g_long: np.ndarray
    max_lag: int
    exact_short: np.ndarray  # the same fits of the inputs' recorded process (alpha unmeasured)
    exact_long: np.ndarray
    correlation: dict[float, Curves]
    receptive_field: int


FAR_LAGS = (100, 1000)
"""Lags of the long-memory check of generated FBM (issue 10): far beyond the paper decoder's
receptive field of 32, inside the generated length of 6,000."""


def _fbm_correlation(data, rows, generated, shown, max_lag) -> dict[float, Curves]:
    """Displacement autocorrelation up to ``max_lag`` of the generated trajectories, of all
    test trajectories and the exact one, for each alpha in ``shown``."""
    return {
        a: Curves(
            generated=stats.displacement_autocorrelation(generated[data.alpha[rows] == a], max_lag),
            input=stats.displacement_autocorrelation(data.displacements[data.alpha == a], max_lag),
            exact=_recorded_autocorrelation(data, np.flatnonzero(data.alpha == a), max_lag),
        )
        for a in shown
    }


def _recorded_autocorrelation(data: io.Trajectories, rows: np.ndarray, max_lag: int):
    """The exact displacement autocorrelation of FBM trajectories ``rows`` as recorded, pooled
    as :func:`minrep.stats.displacement_autocorrelation` pools them (sums of covariances over
    trajectories): the blurred fGn's plus the localisation error's, sigma^2 (2, -1, 0, ...)."""
    lags = np.arange(max_lag + 1)
    noise_shape = np.zeros(max_lag + 1)  # sigma^2 (2, -1, 0, ...)
    noise_shape[0] = 2.0
    if max_lag >= 1:
        noise_shape[1] = -1.0
    measurement = _measurement_of_each(data)
    total = np.zeros(max_lag + 1)
    for i in rows:
        exposure, noise = measurement["exposure"][i], measurement["noise"][i]
        total += processes.fgn_autocovariance(data.alpha[i], lags, data.D[i], exposure)
        total += noise**2 * noise_shape
    correlation = total / total[0]
    # Exact zeros (BM beyond lag 1) come out as rounding, ~1e-17, which a log axis would show
    correlation[np.abs(correlation) < 1e-12] = 0.0
    return correlation


def fbm_generation(
    model,
    data,
    mu,
    *,
    training_range: dict | TrainingRange | None = None,
    n_steps=6000,
    per_alpha=20,
    max_lag=400,
    seed=0,
    progress=False,
) -> FBMGeneration:
    """Trajectories of ``n_steps`` generated from the encoded latents ``mu`` (n, latent_dim)
    of ``per_alpha`` test trajectories per alpha (Fig. 3a, 3b). The exponent alpha_g is read
    from the mean TA-MSD (each divided by 2 D of its input) over sliding windows of three lags
    up to ``max_lag``, and, as the paper's insets, from one fit over lags 1-20 (inside the
    receptive field) and one over ``max_lag - 20`` .. ``max_lag`` (far beyond it), and, for
    ``n_steps`` over 1,000, one over :data:`FAR_LAGS`, against the same fit of the inputs'
    exact MSD (:func:`_exact_fbm_msd`: alpha, unless the inputs were recorded with a
    measurement); the errors average over the alphas in the training range
    (:meth:`TrainingRange.of`)."""
    training_range = TrainingRange.of(model, training_range)
    rows = _pick(data.alpha, per_alpha, np.random.default_rng(seed))
    generated = generate_many(
        model, mu[rows], n_steps, seed=seed, batch_size=600, progress=progress
    )
    far_lag = FAR_LAGS[1] if n_steps > FAR_LAGS[1] else max_lag
    all_lags = np.arange(1, max(max_lag, far_lag) + 1)
    msd = stats.ta_msd(generated, len(all_lags)) / (2 * data.D[rows, None])
    alphas, index = np.unique(data.alpha[rows], return_inverse=True)
    group_msd = np.stack([msd[index == i].mean(0) for i in range(len(alphas))])
    exact_msd = _exact_fbm_msd(data, rows, all_lags)
    group_exact = np.stack([exact_msd[index == i].mean(0) for i in range(len(alphas))])
    lags, window_msd = all_lags[:max_lag], group_msd[:, :max_lag]
    centres, alpha_g = stats.sliding_alpha(lags, window_msd, width=3)
    inside = training_range.contains("alpha", alphas)

    def fitted(msd: np.ndarray, low: int, high: int) -> np.ndarray:
        chosen = (all_lags >= low) & (all_lags <= high)
        return stats.fit_power_law(all_lags[chosen], msd[:, chosen])[0]

    def error(low: int, high: int) -> tuple[np.ndarray, np.ndarray, float]:
        generated_exponent = fitted(group_msd, low, high)
        exact_exponent = fitted(group_exact, low, high)  # alpha without a measurement
        difference = np.abs(generated_exponent - exact_exponent)[inside]
        return generated_exponent, exact_exponent, float(np.mean(difference))

    alpha_short, exact_short, short_error = error(1, 20)
    alpha_long, exact_long, long_error = error(max_lag - 20, max_lag)
    metrics = {
        "n_generated": int(len(rows)),
        "n_steps": int(n_steps),
        "alpha_g_error_lags_1_20": short_error,
        f"alpha_g_error_lags_{max_lag - 20}_{max_lag}": long_error,
    }
    if far_lag == FAR_LAGS[1]:
        metrics[f"alpha_g_error_lags_{FAR_LAGS[0]}_{FAR_LAGS[1]}"] = error(*FAR_LAGS)[2]
    shown = _nearest(alphas, (0.4, 1.0, 1.6))
    return FBMGeneration(
        metrics=metrics,
        alphas=alphas,
        window_centres=centres,
        alpha_g=alpha_g,
        alpha_g_short=alpha_short,
        alpha_g_long=alpha_long,
        max_lag=max_lag,
        exact_short=exact_short,
        exact_long=exact_long,
        correlation=_fbm_correlation(data, rows, generated, shown, min(100, data.n_steps - 1)),
        receptive_field=model.receptive_field,
    )


def _measurement_of_each(data: io.Trajectories) -> dict[str, np.ndarray]:
    """``noise`` and ``exposure`` of every trajectory, ``(n,)`` each (0 when not recorded)."""
    return {k: np.broadcast_to(v, data.alpha.shape) for k, v in data.measurement().items()}


def _exact_fbm_msd(data: io.Trajectories, rows: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """The expected MSD of each picked test trajectory's process, as it was recorded
    (:func:`minrep.processes.fbm_msd` with its noise and exposure), over 2 D: ``(rows, lags)``.
    Its exponent is alpha without a measurement; with one, localisation error flattens the
    short lags (MSD + 2 sigma^2) and blur steepens them (BM: 2 D (t - f/3)), and generated
    tracks are judged against that."""
    measurement = _measurement_of_each(data)
    out = np.empty((len(rows), len(lags)))
    for j, i in enumerate(rows):
        D, noise, exposure = data.D[i], measurement["noise"][i], measurement["exposure"][i]
        out[j] = processes.fbm_msd(data.alpha[i], lags, D, noise, exposure) / (2 * D)
    return out


@dataclass
class SBMGeneration:
    """Fig. 3c, 3d. ``alpha_g`` (n_alphas, n_D): the ageing exponent of the generated
    trajectories per input (alpha, D) cell, ``alpha_input`` the same estimate of the inputs;
    ``diffusion``: D(t) for a few alphas at D = ``D_shown``."""

    metrics: dict
    alphas: np.ndarray
    D: np.ndarray
    alpha_g: np.ndarray
    alpha_input: np.ndarray
    diffusion: dict[float, Curves]
    D_shown: float
    receptive_field: int


def _sbm_generate(model, data, mu, rows, seed, progress) -> np.ndarray:
    """SBM ages: where a displacement sits in time matters, and the paper's decoder learned
    times from its receptive field on. So each trajectory keeps its input's first
    ``first_predicted_step`` displacements as context (none for the "whole" decoder, which
    generates from nothing) and the rest (the training length in all) is generated."""
    start = model.first_predicted_step
    context = data.displacements[rows, :, :start]
    rest = generate_many(
        model,
        mu[rows],
        data.n_steps - start,
        context=context if start else None,
        seed=seed,
        batch_size=600,
        progress=progress,
    )
    return np.concatenate([context, rest], axis=-1)


def _sbm_aging(data, rows, generated, alphas, chosen_d) -> tuple[np.ndarray, np.ndarray]:
    """The ageing exponent (:func:`minrep.stats.aging_alpha`) of the generated trajectories
    and of their inputs per (alpha, D) cell, (n_alphas, n_D) each; NaN with under two."""
    alpha_g = np.full((len(alphas), len(chosen_d)), np.nan)
    alpha_input = np.full_like(alpha_g, np.nan)
    for i, a in enumerate(alphas):
        for j, d in enumerate(chosen_d):
            sel = (data.alpha[rows] == a) & (data.D[rows] == d)
            if sel.sum() >= 2:
                alpha_g[i, j] = stats.aging_alpha(generated[sel])
                alpha_input[i, j] = stats.aging_alpha(data.displacements[rows[sel]])
    return alpha_g, alpha_input


def sbm_generation(
    model,
    data,
    mu,
    *,
    training_range: dict | TrainingRange | None = None,
    per_cell=40,
    n_D=4,
    seed=0,
    progress=False,
) -> SBMGeneration:
    """For every alpha and ``n_D`` values of D inside the training range
    (:meth:`TrainingRange.of`), ``per_cell`` trajectories generated from the encoded latents
    ``mu`` after their input's first receptive field of displacements, to the training length
    (Fig. 3c, 3d). alpha_g is read from the ageing of the lag-2 TEA-MSD over the last 55 %
    (:func:`stats.aging_alpha`), the same estimator applied to the inputs for reference; D(t)
    against the exact D ((t+1)^alpha - t^alpha)."""
    training_range = TrainingRange.of(model, training_range)
    ds = np.unique(data.D[training_range.judged(data)])
    chosen_d = ds[np.linspace(0, len(ds) - 1, min(n_D, len(ds))).round().astype(int)]
    keep = np.isin(data.D, chosen_d)
    cell = np.unique(np.stack([data.alpha, data.D], 1), axis=0, return_inverse=True)[1].ravel()
    rows = np.flatnonzero(keep)[_pick(cell[keep], per_cell, np.random.default_rng(seed))]
    generated = _sbm_generate(model, data, mu, rows, seed, progress)
    alphas = np.unique(data.alpha)
    alpha_g, alpha_input = _sbm_aging(data, rows, generated, alphas, chosen_d)
    inside = training_range.contains("alpha", alphas)
    d_mid = chosen_d[len(chosen_d) // 2]
    t = np.arange(data.n_steps)
    diffusion = {
        a: Curves(
            generated=stats.diffusion_coefficient_t(
                generated[(data.alpha[rows] == a) & (data.D[rows] == d_mid)]
            ),
            exact=d_mid * ((t + 1.0) ** a - t**a),
        )
        for a in _nearest(alphas, (0.4, 1.0, 1.6))
    }
    metrics = {
        "n_generated": int(len(rows)),
        "context": (
            f"the input's first {model.first_predicted_step} displacements"
            if model.first_predicted_step
            else "none: generated from nothing"
        ),
        "alpha_g_error": float(np.nanmean(np.abs(alpha_g - alphas[:, None])[inside])),
        "alpha_input_estimator_error": float(
            np.nanmean(np.abs(alpha_input - alphas[:, None])[inside])
        ),
    }
    return SBMGeneration(
        metrics, alphas, chosen_d, alpha_g, alpha_input, diffusion, d_mid, model.receptive_field
    )


@dataclass
class BMGeneration:
    """D of each generated trajectory (mean squared displacement / 2) against its input's
    label and the same estimate of the input, (n_generated,) each."""

    metrics: dict
    D_label: np.ndarray
    D_generated: np.ndarray
    D_input: np.ndarray


def bm_generation(
    model,
    data,
    mu,
    *,
    training_range: dict | TrainingRange | None = None,
    per_D=200,
    seed=0,
    progress=False,
) -> BMGeneration:
    """Trajectories of the training length generated from the latents ``mu`` of ``per_D``
    encoded test trajectories per D; D of each from its mean squared displacement / 2 (the
    maximum likelihood estimate for BM), against the input's label and the same estimate of
    the input; the errors average over the inputs in the training range."""
    inside_all = TrainingRange.of(model, training_range).judged(data)
    rows = _pick(data.D, per_D, np.random.default_rng(seed))
    generated = generate_many(
        model, mu[rows], data.n_steps, seed=seed, batch_size=600, progress=progress
    )
    d_generated = (generated.astype(np.float64) ** 2).mean(axis=(1, 2)) / 2
    d_input = (data.displacements[rows].astype(np.float64) ** 2).mean(axis=(1, 2)) / 2
    inside = inside_all[rows]
    error = np.abs(np.log10(d_generated) - np.log10(data.D[rows]))
    metrics = {
        "n_generated": int(len(rows)),
        "log10_D_g_error": float(error[inside].mean()),
        "log10_D_g_vs_input_estimate": float(
            np.abs(np.log10(d_generated) - np.log10(d_input))[inside].mean()
        ),
    }
    return BMGeneration(metrics, data.D[rows], d_generated, d_input)


GENERATION = {"fbm": fbm_generation, "sbm": sbm_generation, "bm": bm_generation}


# ---------------------------------------------------------------------------------------------
# The whole analysis


@dataclass
class Analysis:
    """``metrics`` (JSON-ready numbers, as in ``metrics.json``) and the phases the figures
    draw: the training range judged on, latents, readouts, likelihood and generation (None
    for a process without a generation check)."""

    metrics: dict
    training_range: TrainingRange
    latents: LatentPhase
    readouts: ReadoutPhase
    likelihood: LikelihoodPhase
    generation: FBMGeneration | SBMGeneration | BMGeneration | None


def _check_test_set(model: VAE, data: io.Trajectories) -> None:
    if data.is_ragged:
        raise io.TrajectoryFileError("the analysis needs trajectories of one length")
    if data.dim != model.config.dim:
        raise io.TrajectoryFileError(
            f"the test set has dim {data.dim}, the model was trained on dim {model.config.dim}"
        )
    if data.alpha is None or data.D is None:
        raise io.TrajectoryFileError("the analysis needs a labelled test set (alpha and D)")


def analyze(
    model: VAE,
    data: io.Trajectories,
    *,
    seed: int = 0,
    progress: bool = True,
    training_range: dict | None = None,
    generation: dict | None = None,
    check_generation: bool = True,
) -> Analysis:
    """Everything of ``minrep analyze`` for a model and a labelled test set of one length:
    latent statistics, readouts against the classical TA-MSD fit, MIG and DCI, the NLL against
    the exact one per (alpha, D) cell, and the statistics of trajectories generated from the
    encoded test trajectories (``generation``: keyword arguments of the process's generation
    function, e.g. ``{"n_steps": 500}``; ``check_generation`` False skips it). Headline
    numbers are computed inside the training range: ``training_range`` (``{"alpha": [lo, hi],
    "D": [lo, hi]}``), else the model's recorded one, else the paper's grid
    (``metrics["training_range_recorded"]`` False)."""
    _check_test_set(model, data)
    scope = TrainingRange.of(model, training_range)
    mask = scope.judged(data)
    with bar(total=4, desc="analyze", enabled=progress, unit="phase") as phases:
        phases.set_postfix_str("latents")
        latents = latent_phase(model, data, mask, progress)
        phases.update()
        phases.set_postfix_str("readouts")
        readouts = readout_phase(model, data, latents, scope, seed=seed, progress=progress)
        phases.update()
        phases.set_postfix_str("likelihood")
        likelihood = likelihood_phase(model, data, latents, progress)
        phases.update()
        phases.set_postfix_str("generation")
        generated = None
        if check_generation and data.process in GENERATION:
            generated = GENERATION[data.process](
                model,
                data,
                latents.mu,
                training_range=scope,
                seed=seed,
                progress=progress,
                **(generation or {}),
            )
        phases.update()
    metrics = {
        "process": data.process,
        "n": int(len(data)),
        "n_in_training_range": int(mask.sum()),
        "training_range": scope.to_dict(),
        "training_range_recorded": scope.recorded,
        **latents.metrics(),
        **readouts.metrics(),
        **likelihood.metrics(),
    }
    if generated is not None:
        metrics["generation"] = generated.metrics
    return Analysis(metrics, scope, latents, readouts, likelihood, generated)
