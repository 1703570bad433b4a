"""Physical estimates from a model's latents: alpha and D of each track, with 90 % intervals.

A model gives latents, not parameters. A :class:`Calibration`, fitted once per model on
simulated tracks of its process (uniform alpha and log10 D over its training range, 24
log-spaced lengths from the model's minimum to the training length), maps the posterior means
of the surviving latents and the track's length to alpha and log10 D (polynomials, as the
analysis's readouts), with a residual scale that depends on them too, and turns that into
intervals by split conformal prediction, length by length: on calibration tracks of that
length not used for the fit, 90 % of the residuals lie within ``quantile`` scales of the
estimate, so the intervals cover the truth 90 % of the time on tracks like those, at every
length (tests check 87-93 % in classes of lengths and at single lengths, on fresh tracks).

Units. Every track is rescaled to the calibration's reference RMS displacement (the typical
one of the training range) before it is encoded, and D scaled back: scaling displacements by c
scales D by exactly c^2 for BM, FBM and SBM, so an estimate does not depend on where D lies in
the training grid, and scaling a track by c scales its D estimate by exactly c^2 and changes
nothing else. Positions in pixels and frames give D in pixel^2/frame^alpha; with
``pixel_size`` (micrometres per pixel, or 1 when the file is already in micrometres) and
``frame_interval`` (seconds), D is in um^2/s^alpha:
D = D_frames pixel_size^2 / frame_interval^alpha (alpha at its estimate).

A model trained on tracks simulated with a measurement (localisation error and motion blur,
:mod:`minrep.processes`) records their ranges; its calibration draws them too and adds the
exposure (0-1 of a frame) and the localisation error, as its ratio to the track's RMS
displacement (free of scale, and the track's RMS is known, so the interval of sigma is as well
calibrated as the ratio's), reported per coordinate in length units.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from minrep import MinrepError, checkpoint, io
from minrep.analysis import choose_degree, latent_statistics, polynomial_features
from minrep.encode import encode
from minrep.model import VAE

LEVEL = 0.9
CALIBRATION = "calibration.json"
SCALE_DEGREE = 2  # of the polynomial for the log residual scale
QUANTILE_MIN_TRACKS = 400  # held-out tracks behind each conformal quantile (90 +- 1.5 %)
LENGTHS = 24  # distinct track lengths of a calibration set, log-spaced


class EstimateError(MinrepError, ValueError):
    """Tracks or a calibration that cannot give estimates."""


@dataclass
class ParameterMap:
    """One parameter's estimate: a polynomial of ``degree`` in the standardised features for
    the value, one of degree :data:`SCALE_DEGREE` for the log of the residual scale, and the
    interval's half-width, quantile(n) x scale, with quantile(n) the conformal quantile of
    |residual| / scale among the calibration's tracks of each of its lengths (or of a few
    neighbouring ones, :data:`QUANTILE_MIN_TRACKS`; ``quantile_values`` at
    ``quantile_lengths``, their geometric mean, in displacements), interpolated in log n
    between them: the coverage then holds at every length, not only on average over a class of
    lengths (one quantile per class of lengths covered 87-88 % at the longest tracks).
    Calibrations written before 2026-11-28 have such per-class quantiles instead
    (``length_edges``, ``quantiles``), and still work."""

    degree: int
    value: list[float]
    log_scale: list[float]
    length_edges: list[int] = dataclasses.field(default_factory=list)
    quantiles: list[float] = dataclasses.field(default_factory=list)
    quantile_lengths: list[float] = dataclasses.field(default_factory=list)
    quantile_values: list[float] = dataclasses.field(default_factory=list)

    def predict(self, features: np.ndarray, n_steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Estimates and interval half-widths, ``(n,)`` each."""
        value = polynomial_features(features, self.degree) @ np.asarray(self.value)
        scale = np.exp(polynomial_features(features, SCALE_DEGREE) @ np.asarray(self.log_scale))
        return value, self.quantile(n_steps) * scale

    def quantile(self, n_steps: np.ndarray) -> np.ndarray:
        """The conformal quantile of |residual| / scale for tracks of ``n_steps``."""
        if not self.quantile_values:  # the per-class quantiles of older calibrations
            edges = np.asarray(self.length_edges)
            classes = np.clip(np.searchsorted(edges, n_steps, side="right") - 1, 0, len(edges) - 1)
            return np.asarray(self.quantiles)[classes]
        log_length = np.log(np.asarray(n_steps, dtype=np.float64))
        return np.interp(log_length, np.log(self.quantile_lengths), self.quantile_values)


@dataclass
class Calibration:
    """The map from latents to parameters of one model, as JSON (no code, no pickle)."""

    process: str
    latents: list[int]  # the surviving latents whose posterior means are the features
    feature_mean: list[float]  # standardisation of [mu of each latent, log(n_steps)]
    feature_scale: list[float]
    reference_log_rms: float  # tracks are rescaled to this RMS displacement (log)
    level: float
    # "alpha" (not for BM), "log10_D"; for a model trained with a measurement, "exposure" and
    # "noise_ratio" (the localisation error over the track's RMS displacement)
    parameters: dict[str, ParameterMap]
    training_range: dict
    n_tracks: int
    seed: int
    # For a model trained with a measurement: the displacements' autocorrelation at these lags
    # joins the features (:func:`_correlations`; calibrations written before have none).
    correlation_lags: list[int] = dataclasses.field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source="calibration") -> Calibration:
        try:
            values = json.loads(text)
            values["parameters"] = {k: ParameterMap(**v) for k, v in values["parameters"].items()}
            return cls(**values)
        except (ValueError, TypeError, KeyError) as err:
            raise EstimateError(f"{source}: not a minrep calibration ({err})") from None

    def save(self, path) -> Path:
        path = Path(path)
        with io.atomic_write(path) as tmp:
            tmp.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path) -> Calibration:
        path = Path(path)
        if not path.is_file():
            raise EstimateError(f"{path}: no such file")
        return cls.from_json(path.read_text(), path)

    def features(self, mu: np.ndarray, tracks: io.Trajectories) -> np.ndarray:
        """The standardised features of ``tracks`` with posterior means ``mu``."""
        raw = _raw_features(mu[:, self.latents], tracks, self.correlation_lags)
        return (raw - np.asarray(self.feature_mean)) / np.asarray(self.feature_scale)


MEASUREMENT_LAGS = [1, 2, 3, 4, 8]
"""Lags of the displacement autocorrelation a calibration of a model trained with a
measurement adds to the latents. Localisation error (negative at lag 1) and blur (positive)
leave their mark there, and the latents do not carry it: the decoder infers it from the
steps before each one, so the encoder is never asked for it (measured on fbm-2d: R^2 of the
reduced error from all six latents 0.21 even at beta = 0, of the exposure 0.01)."""


def _correlations(tracks: io.Trajectories, lags: list[int]) -> np.ndarray:
    """Autocorrelation of each track's displacements at ``lags``, pooled over coordinates and
    time, ``(n, len(lags))`` (0 where a track is too short for a lag)."""
    dx = np.nan_to_num(tracks.displacements.astype(np.float64))  # padding adds nothing
    power = (dx**2).sum(axis=(1, 2))
    out = np.zeros((len(tracks), len(lags)))
    for j, lag in enumerate(lags):
        if lag < dx.shape[-1]:
            out[:, j] = (dx[..., lag:] * dx[..., :-lag]).sum(axis=(1, 2)) / power
    return out


def _raw_features(mu_kept: np.ndarray, tracks: io.Trajectories, lags: list[int]) -> np.ndarray:
    """[posterior means of the kept latents, log(n_steps), autocorrelations at ``lags``]."""
    return np.column_stack([mu_kept, np.log(tracks.step_counts()), _correlations(tracks, lags)])


def _rms(tracks: io.Trajectories) -> np.ndarray:
    """RMS displacement of each track, ``(n,)`` (padding ignored)."""
    return np.sqrt(np.nanmean(tracks.displacements.astype(np.float64) ** 2, axis=(1, 2)))


def _rescaled(tracks: io.Trajectories, reference_log_rms: float):
    """The tracks scaled to the reference RMS displacement, and log10 of each factor c."""
    dx = tracks.displacements.astype(np.float64)
    rms = _rms(tracks)
    if not (rms > 0).all():
        i = int(np.flatnonzero(~(rms > 0))[0])
        raise EstimateError(
            f"{tracks.meta.get('source', 'tracks')}: trajectory "
            f"{io.trajectory_name(tracks, i)} does not move: no D to estimate"
        )
    factor = math.exp(reference_log_rms) / rms
    scaled = io.Trajectories(
        (dx * factor[:, None, None]).astype(np.float32),
        dict(tracks.labels),
        dict(tracks.meta),
        tracks.lengths,
    )
    return scaled, np.log10(factor)


def calibrate(
    model: VAE,
    process: str,
    *,
    longest: int = 399,
    n_tracks: int = 40_000,
    seed: int = 0,
    progress: bool = False,
) -> Calibration:
    """Fit the :class:`Calibration` of ``model`` (trained on ``process``, tracks of up to
    ``longest`` displacements) on ``n_tracks`` simulated tracks (``model.training_range``, else
    the paper's grid): half fit the polynomials (their degree chosen by cross-validation), half
    give the conformal quantile."""
    if process not in ("bm", "fbm", "sbm"):
        raise EstimateError(f"estimates need a model of bm, fbm or sbm, not {process!r}")
    rng = np.random.default_rng(seed)
    grid = model.training_range or {"alpha": [0.2, 1.8], "D": [1e-5, 1e-2]}
    low, high = grid["alpha"] if process != "bm" else (1.0, 1.0)
    alpha = rng.uniform(low, high, n_tracks)
    log10_d = rng.uniform(*np.log10(grid["D"]), n_tracks)
    # Lengths from a few log-spaced values: each is simulated and encoded as one group.
    lengths = np.unique(np.geomspace(model.config.min_steps, longest, LENGTHS).round())
    n_steps = rng.choice(lengths.astype(int), n_tracks)
    # The measurement the model was trained with, drawn over the same ranges.
    reduced_noise = rng.uniform(*grid.get("reduced_noise", (0.0, 0.0)), n_tracks)
    exposure = rng.uniform(*grid.get("exposure", (0.0, 0.0)), n_tracks)
    noise = np.sqrt(2 * reduced_noise * 10**log10_d)
    tracks = _simulate(
        process, alpha, 10**log10_d, n_steps, model.config.dim, rng, noise=noise, exposure=exposure
    )
    # The typical RMS displacement of the training range: every track is brought to it.
    reference = float(np.mean(np.log(_rms(tracks))))
    scaled, log10_factor = _rescaled(tracks, reference)
    latents = encode(model, scaled, progress=progress)
    kept = latent_statistics(latents["mu"], latents["logvar"])["surviving"]
    lags = MEASUREMENT_LAGS if {"exposure", "reduced_noise"} & set(grid) else []
    raw = _raw_features(latents["mu"][:, kept], tracks, lags)
    mean, scale = raw.mean(axis=0), raw.std(axis=0) + 1e-12
    x = (raw - mean) / scale
    targets = {"log10_D": log10_d + 2 * log10_factor}
    if process != "bm":
        targets = {"alpha": alpha, **targets}
    if "exposure" in grid:
        targets["exposure"] = exposure
    if "reduced_noise" in grid:  # scale-free: the track's RMS is known, so is sigma's interval
        targets["noise_ratio"] = noise / _rms(tracks)
    order = rng.permutation(n_tracks)
    fit, hold = order[: n_tracks // 2], order[n_tracks // 2 :]
    parameters = {name: _fit_map(x, y, fit, hold, seed, n_steps) for name, y in targets.items()}
    return Calibration(
        process=process,
        latents=[int(i) for i in kept],
        feature_mean=mean.tolist(),
        feature_scale=scale.tolist(),
        reference_log_rms=float(reference),
        level=LEVEL,
        parameters=parameters,
        training_range={
            "alpha": [float(low), float(high)],
            **{k: list(map(float, v)) for k, v in grid.items() if k != "alpha"},
        },
        n_tracks=int(n_tracks),
        seed=int(seed),
        correlation_lags=list(lags),
    )


def model_calibration(path_or_name, progress: bool = False) -> tuple[VAE, Calibration]:
    """A model (directory or shipped name) and its calibration: ``calibration.json`` beside
    it, or, for a run without one, fitted now (about a minute) and saved there."""
    directory = checkpoint.resolve(path_or_name)
    model = checkpoint.load_model(directory)
    path = directory / CALIBRATION
    if path.is_file():
        return model, Calibration.load(path)
    data = checkpoint.read_config(directory).get("data") or {}
    calibration = calibrate(
        model, str(data.get("process")), longest=int(data.get("n_steps") or 399),
        progress=progress,
    )  # fmt: skip
    calibration.save(path)
    return model, calibration


def _fit_map(x, y, fit, hold, seed, n_steps) -> ParameterMap:
    degree = choose_degree(x[fit], y[fit], seed)
    design = polynomial_features(x, degree)
    value, *_ = np.linalg.lstsq(design[fit], y[fit], rcond=None)
    residual = y - design @ value
    # The log of |residual| has mean log(scale) - 0.635 for Gaussian residuals; the constant
    # does not matter: the conformal quantiles absorb it.
    small = polynomial_features(x, SCALE_DEGREE)
    log_scale, *_ = np.linalg.lstsq(small[fit], np.log(np.abs(residual[fit]) + 1e-12), rcond=None)
    scores = np.abs(residual[hold]) / np.exp(small[hold] @ log_scale)
    # The conformal quantile at each length of the calibration, from its own held-out tracks.
    lengths, counts = np.unique(n_steps[hold], return_counts=True)
    centres, quantiles = [], []
    for pool in _pools(counts, QUANTILE_MIN_TRACKS):
        ranked = np.sort(scores[np.isin(n_steps[hold], lengths[pool])])
        quantiles.append(float(ranked[min(math.ceil((len(ranked) + 1) * LEVEL), len(ranked)) - 1]))
        centres.append(float(np.exp(np.log(lengths[pool]).mean())))
    return ParameterMap(
        int(degree),
        value.tolist(),
        log_scale.tolist(),
        quantile_lengths=centres,
        quantile_values=quantiles,
    )


def _pools(counts: np.ndarray, minimum: int) -> list[list[int]]:
    """Consecutive indices of ``counts`` grouped so that each group counts at least
    ``minimum`` (a small set's neighbouring lengths share a quantile); one group if the whole
    counts fewer."""
    pools, pool = [], []
    for i in range(len(counts)):
        pool.append(i)
        rest = counts[i + 1 :].sum()
        if rest == 0 or (counts[pool].sum() >= minimum and rest >= minimum):
            pools.append(pool)
            pool = []
    return pools


def _simulate(process, alpha, D, n_steps, dim, rng, noise=None, exposure=None) -> io.Trajectories:
    """Tracks of the given lengths (a ragged set), simulated length by length; ``noise`` and
    ``exposure`` (``(n,)`` each, or None) the measurement of each (:mod:`minrep.processes`)."""
    from minrep.processes import simulate

    longest = int(n_steps.max())
    dx = np.full((len(alpha), dim, longest), np.nan, dtype=np.float32)
    measurement = {"noise": noise, "exposure": exposure}
    measurement = {
        k: np.asarray(v, dtype=np.float64) for k, v in measurement.items() if v is not None
    }
    for length in np.unique(n_steps):
        rows = np.flatnonzero(n_steps == length)
        seed = int(rng.integers(2**63))
        part = simulate(
            process, alpha[rows], D[rows], int(length), dim=dim, seed=seed,
            **{k: v[rows] for k, v in measurement.items()},
        )  # fmt: skip
        dx[rows, :, :length] = part
    labels = {"alpha": alpha, "D": D, "process": np.full(len(alpha), process), **measurement}
    return io.Trajectories(dx, labels, {"process": process}, lengths=n_steps)


def estimate(
    model: VAE,
    tracks: io.Trajectories,
    calibration: Calibration,
    *,
    pixel_size: float = 1.0,
    frame_interval: float = 1.0,
) -> pd.DataFrame:
    """One row per track: ``particle``, ``n_steps``, ``alpha``, ``alpha_low``, ``alpha_high``,
    ``D``, ``D_low``, ``D_high`` (:data:`LEVEL` intervals; D per component, in length^2 /
    time^alpha of ``pixel_size`` and ``frame_interval``: the module docstring) and, for a
    model trained with a measurement, ``noise`` (the localisation error's standard deviation
    per coordinate, in length units) and ``exposure`` (0-1 of a frame), each with its interval.
    A 1D model estimates each axis of 2D/3D tracks as its own track: one row per track and
    ``axis``."""
    for name, value in (("pixel_size", pixel_size), ("frame_interval", frame_interval)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise EstimateError(f"{name} must be a positive number, got {value!r}")
    if model.config.dim == 1 and tracks.dim > 1:
        rows = []
        for axis in range(tracks.dim):
            one = io.Trajectories(
                tracks.displacements[:, axis : axis + 1], tracks.labels, tracks.meta, tracks.lengths
            )
            table = estimate(
                model, one, calibration, pixel_size=pixel_size, frame_interval=frame_interval
            )
            table.insert(1, "axis", io.COORDINATES[axis])
            rows.append(table)
        return pd.concat(rows).sort_index(kind="stable").reset_index(drop=True)
    scaled, log10_factor = _rescaled(tracks, calibration.reference_log_rms)
    mu = encode(model, scaled)["mu"]
    n_steps = tracks.step_counts()
    x = calibration.features(mu, tracks)
    out = {
        "particle": tracks.labels.get("particle", np.arange(len(tracks))),
        "n_steps": n_steps,
    }
    if "alpha" in calibration.parameters:
        alpha, half = calibration.parameters["alpha"].predict(x, n_steps)
        out.update(alpha=alpha, alpha_low=alpha - half, alpha_high=alpha + half)
    else:  # BM: alpha = 1 by the model's assumption
        alpha = np.ones(len(tracks))
        out.update(alpha=alpha, alpha_low=alpha, alpha_high=alpha)
    log10_d, half = calibration.parameters["log10_D"].predict(x, n_steps)
    log10_d = log10_d - 2 * log10_factor  # back to the track's own scale
    units = 2 * math.log10(pixel_size) - alpha * math.log10(frame_interval)
    for suffix, value in (("", log10_d), ("_low", log10_d - half), ("_high", log10_d + half)):
        out[f"D{suffix}"] = 10.0 ** (value + units)
    # Physical bounds: an interval cut to them still holds the truth as often.
    measured = {
        "noise_ratio": ("noise", _rms(tracks) * pixel_size, np.inf),
        "exposure": ("exposure", 1.0, 1.0),
    }
    for key, (name, factor, upper) in measured.items():
        if key in calibration.parameters:
            value, half = calibration.parameters[key].predict(x, n_steps)
            for suffix, v in (("", value), ("_low", value - half), ("_high", value + half)):
                out[f"{name}{suffix}"] = np.clip(v, 0.0, upper) * factor
    return pd.DataFrame(out)


def estimate_in_units(
    model: VAE,
    tracks: io.Trajectories,
    calibration: Calibration,
    pixel_size: float | None = None,
    frame_interval: float | None = None,
) -> tuple[pd.DataFrame, str]:
    """:func:`estimate` in the units given, else those the tracks' file states
    (:func:`units`), with the unit of D (and of the localisation error) as columns; and the
    unit of D."""
    pixel, interval, unit = units(tracks.meta, pixel_size, frame_interval)
    table = estimate(model, tracks, calibration, pixel_size=pixel, frame_interval=interval)
    table["D_unit"] = unit
    if "noise" in table:
        table["noise_unit"] = unit.split("^")[0]  # a length
    return table, unit


def units(meta: dict, pixel_size: float | None, frame_interval: float | None):
    """``pixel_size``, ``frame_interval`` and the unit of D for tracks with ``meta``: the ones
    given (micrometres per pixel, seconds per frame), else what the file states (TrackMate:
    positions in um, a frame interval in s), else pixels and frames."""
    stated = meta.get("length_unit")
    if pixel_size is not None and stated not in (None, "pixel"):
        raise EstimateError(
            f"{meta.get('source', 'the tracks')} states its positions in {stated}: "
            f"--pixel-size would scale them twice; leave it out"
        )
    length = "um" if pixel_size is not None else (stated or "pixel")
    interval = meta.get("frame_interval") if meta.get("time_unit") not in (None, "frame") else None
    time = "s" if frame_interval is not None else (meta.get("time_unit") if interval else "frame")
    frame_interval = frame_interval if frame_interval is not None else (interval or 1.0)
    return pixel_size or 1.0, frame_interval, f"{length}^2/{time}^alpha"
