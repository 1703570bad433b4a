"""Labelled datasets: parameter grids, the paper's presets, and :func:`make_dataset`.

A dataset is a grid of (alpha, D) cells with ``n_per_cell`` trajectories each, simulated by
:mod:`minrep.processes` (exact, numpy) or by the optional andi-datasets backend
(:mod:`minrep.andi`). The physics and its conventions live in :mod:`minrep.processes`; this
module only decides which parameters to simulate, and records them.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

import numpy as np

from minrep import __version__, andi
from minrep.io import Trajectories, TrajectoryFileError
from minrep.processes import (
    ALPHA_RANGE,
    ANDI_ONLY_PROCESSES,
    PROCESSES,
    SimulationError,
    admits_alpha,
    check_process,
    simulate,
)


@dataclass(frozen=True)
class Grid:
    """A labelled simulation grid: every (alpha, D) pair gets ``n_per_cell`` trajectories.

    ``n_positions`` is the paper's T (positions per trajectory); trajectories carry
    ``n_steps = n_positions - 1`` displacements.
    """

    alpha: tuple[float, ...]
    D: tuple[float, ...]
    n_per_cell: int
    n_positions: int = 400

    @property
    def n_steps(self) -> int:
        return self.n_positions - 1

    @property
    def n_trajectories(self) -> int:
        return len(self.alpha) * len(self.D) * self.n_per_cell

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-trajectory ``(alpha, D)``, shape ``(n,)`` each, cell by cell (alpha slowest)."""
        a, d = np.meshgrid(np.asarray(self.alpha), np.asarray(self.D), indexing="ij")
        return (
            np.repeat(a.ravel(), self.n_per_cell).astype(np.float64),
            np.repeat(d.ravel(), self.n_per_cell).astype(np.float64),
        )


def _grid(alpha, D, n_per_cell, n_positions=400) -> Grid:
    return Grid(tuple(float(a) for a in alpha), tuple(float(d) for d in D), n_per_cell, n_positions)


PRESETS: dict[str, Grid] = {
    # The paper's training sets: 21 x 10 cells x 476 = 99,960 trajectories of T = 400.
    "paper": _grid(np.linspace(0.2, 1.8, 21), np.geomspace(1e-5, 1e-2, 10), 476),
    # The paper's extended test sets (Fig. 2 and 3): 49 x 49 cells x 41 = 98,441 trajectories.
    "paper-test": _grid(np.linspace(0.04, 1.96, 49), np.geomspace(3.16e-6, 3.16e-2, 49), 41),
    # For tests and demos: 9 x 4 cells x 100 = 3,600 trajectories.
    "small": _grid(np.linspace(0.2, 1.8, 9), np.geomspace(1e-5, 1e-2, 4), 100),
}
"""The paper's grids. For BM alpha is fixed at 1 and the count per D is multiplied by the number
of alpha values, so a BM set has as many trajectories as the FBM set of the same preset."""


MAX_VALUES = 100_000
"""The most values one ``start:stop:count`` may ask for."""


class GridError(SimulationError):
    """A grid or dataset setting out of its range; ``field`` names it (``alpha``, ``D``,
    ``n_per_cell``, ``n_positions``, ``dim``, ``seed``, ``preset``, ``backend``) so that a
    caller, such as the command line, can name the option it came from."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def parse_values(spec: str, log: bool = False) -> tuple[float, ...]:
    """Grid values from text: ``"0.5"``, ``"0.2,0.6,1.0"`` or ``"start:stop:count"`` (evenly
    spaced, ends included; in log space when ``log``, as for D). Every value is finite;
    ``count`` is 1 to :data:`MAX_VALUES`; in log space start and stop are > 0. Raises
    ValueError."""
    try:
        if ":" in spec:
            start, stop, count = spec.split(":")
            start, stop, count = float(start), float(stop), int(count)
            if count < 1:
                raise ValueError
        else:
            values = [float(v) for v in spec.split(",")]
    except ValueError:
        raise ValueError(
            f"{spec!r}: expected a number, a comma-separated list or start:stop:count"
        ) from None
    if ":" in spec:
        if not (math.isfinite(start) and math.isfinite(stop)):
            raise ValueError(f"{spec!r}: start and stop must be finite numbers")
        if count > MAX_VALUES:
            raise ValueError(f"{spec!r}: at most {MAX_VALUES} values, not {count}")
        if log and not (start > 0 and stop > 0):
            raise ValueError(f"{spec!r}: log-spaced values need start and stop > 0")
        values = (np.geomspace if log else np.linspace)(start, stop, count)
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{spec!r}: {bad[0]} is not a finite number")
    return tuple(float(v) for v in values)


def parse_range(spec: str) -> float | tuple:
    """A measurement setting from text: ``"0.02"`` (every trajectory), ``"0:0.05"`` (drawn
    uniformly per trajectory between the two) or ``"0:1:5"`` (one of 5 evenly spaced levels
    per trajectory). Raises ValueError."""
    try:
        values = tuple(float(v) for v in spec.split(":"))
    except ValueError:
        values = ()
    if len(values) not in (1, 2, 3):
        raise ValueError(f"{spec!r}: expected a number, low:high or low:high:count")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{spec!r}: not a finite number")
    if len(values) >= 2 and values[0] > values[1]:
        raise ValueError(f"{spec!r}: low must not exceed high")
    if len(values) == 3:
        if not (values[2] >= 2 and values[2] == int(values[2])):
            raise ValueError(f"{spec!r}: the count of levels must be a whole number >= 2")
        return (values[0], values[1], int(values[2]))
    return values[0] if len(values) == 1 else values


def draw_measurement(setting, n: int, rng) -> np.ndarray:
    """Per-trajectory values ``(n,)`` of a measurement setting: a number (every trajectory),
    ``(low, high)`` (uniform draws from ``rng``) or ``(low, high, count)`` (one of ``count``
    evenly spaced levels each: a few distinct exposures keep the exact likelihood of a large
    set cheap, :func:`minrep.stats.bayes_estimate`)."""
    if np.ndim(setting) == 0:
        return np.full(n, float(setting))
    if len(setting) == 3:
        low, high, count = setting
        return rng.choice(np.linspace(low, high, int(count)), n)
    low, high = setting
    return rng.uniform(low, high, n)


def alpha_range(process: str) -> str:
    """The exponents ``process`` admits, as text (:func:`minrep.processes.admits_alpha`)."""
    low, high = ALPHA_RANGE[process]
    if process == "bm":
        return "alpha = 1"
    if process == "fbm":
        return f"{low:g} < alpha < {high:g}"
    if process == "sbm":
        return f"alpha > {low:g}"
    if process in ("ctrw", "attm"):
        return f"{low:g} < alpha <= {high:g}"
    return f"{low:g} <= alpha <= {high:g}"


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_grid(process: str, grid: Grid) -> None:
    """Raise a :class:`GridError` naming the field and the value unless every value of
    ``grid`` is one that ``process`` can be simulated at: alpha in its range (one value at
    least), D finite and > 0, ``n_per_cell`` >= 1 and ``n_positions`` >= 2 (integers)."""
    for field, values in (("alpha", grid.alpha), ("D", grid.D)):
        if len(values) == 0:
            raise GridError(field, f"{field}: no values (an empty grid has no trajectory)")
    for value in grid.D:
        if not (math.isfinite(value) and value > 0):
            raise GridError("D", f"D = {value} must be finite and > 0")
    for value in grid.alpha:
        if not (math.isfinite(value) and admits_alpha(process, value)):
            raise GridError(
                "alpha",
                f"alpha = {value} is outside the range of {process} ({alpha_range(process)})",
            )
    if not _is_integer(grid.n_per_cell) or grid.n_per_cell < 1:
        raise GridError("n_per_cell", f"need n_per_cell >= 1 (an integer), got {grid.n_per_cell!r}")
    if not _is_integer(grid.n_positions) or grid.n_positions < 2:
        raise GridError(
            "n_positions",
            f"need n_positions >= 2 (positions T per trajectory, an integer), "
            f"got {grid.n_positions!r}",
        )


def check_labels(data: Trajectories, source="data", process: str | None = None) -> None:
    """Refuse labels ``alpha`` and ``D`` that no simulation has: every D finite and > 0,
    every alpha finite and, where ``process`` is given, in its range. The
    :class:`minrep.io.TrajectoryFileError` names ``source``, the first bad trajectory, its
    value and how many more there are."""
    alpha = np.asarray(data.labels["alpha"], dtype=np.float64)
    D = np.asarray(data.labels["D"], dtype=np.float64)
    admitted = np.isfinite(alpha)
    if process is not None:
        admitted &= np.array([admits_alpha(process, a) for a in alpha], dtype=bool)
    rule = f"{process} needs {alpha_range(process)}" if process else "alpha must be finite"
    for name, values, good, needs in (
        ("D", D, np.isfinite(D) & (D > 0), "D must be finite and > 0"),
        ("alpha", alpha, admitted, rule),
    ):
        bad = np.flatnonzero(~good)
        if bad.size:
            more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
            raise TrajectoryFileError(
                f"{source}: trajectory {bad[0]} has {name} = {values[bad[0]]}{more}; {needs}"
            )


def preset_grid(process: str, preset: str = "small", **overrides) -> Grid:
    """The grid of ``preset`` for ``process``, with any field replaced by ``overrides``.

    For processes with a restricted exponent range (``bm``, ``ctrw``, ``lw``, ``attm``) the
    preset's alpha values are reduced to those the process admits; alpha values given
    explicitly in ``overrides`` are checked instead, by the simulator.
    """
    if preset not in PRESETS:
        raise GridError("preset", f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    check_process(process, PROCESSES + ANDI_ONLY_PROCESSES)
    grid = PRESETS[preset]
    if process == "bm":
        grid = replace(grid, alpha=(1.0,), n_per_cell=grid.n_per_cell * len(grid.alpha))
    elif process in ANDI_ONLY_PROCESSES:
        low, high = ALPHA_RANGE[process]
        kept = tuple(a for a in grid.alpha if admits_alpha(process, a))
        if not kept:
            raise SimulationError(f"no alpha of preset {preset!r} lies in [{low}, {high}]")
        grid = replace(grid, alpha=kept)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key in ("alpha", "D"):
        if key in overrides:
            overrides[key] = tuple(float(v) for v in np.atleast_1d(overrides[key]))
    if process == "bm" and set(overrides.get("alpha", (1.0,))) != {1.0}:
        raise GridError("alpha", "Brownian motion has alpha = 1; give alpha only for fbm or sbm")
    grid = replace(grid, **overrides)
    check_grid(process, grid)
    return grid


def make_dataset(
    process: str,
    preset: str = "small",
    *,
    alpha=None,
    D=None,
    n_per_cell: int | None = None,
    n_positions: int | None = None,
    dim: int = 1,
    seed: int | None = 0,
    backend: str = "numpy",
    dtype=np.float32,
    progress: bool = False,
    noise=0.0,
    exposure=0.0,
    reduced_noise=0.0,
):
    """Simulate a labelled dataset on a preset grid; any grid field can be overridden.

    ``n_positions`` is T, the positions per trajectory (T - 1 displacements). ``noise`` (the
    localisation error's standard deviation) and ``exposure`` (motion blur, 0-1 of a frame;
    :mod:`minrep.processes`) are a number, a range ``(low, high)`` drawn uniformly per
    trajectory or levels ``(low, high, count)`` (:func:`draw_measurement`); when set they
    become labels too. ``reduced_noise`` (instead of ``noise``) sets
    the localisation error relative to the motion in a frame, sigma^2 / (2 D) (a frame is the
    time unit), so that every D of the grid is as noisy; it is a label too. The same seed gives
    the same bytes (and,
    without noise and blur, those of earlier versions); ``seed=None`` draws fresh randomness.
    Returns a :class:`minrep.io.Trajectories` with labels ``alpha``, ``D`` and ``process`` and
    the grid, seed and backend in its metadata.
    """
    grid = preset_grid(
        process, preset, alpha=alpha, D=D, n_per_cell=n_per_cell, n_positions=n_positions
    )
    if not _is_integer(dim) or dim < 1:
        raise GridError("dim", f"need dim >= 1 (an integer), got {dim!r}")
    if seed is not None and not (_is_integer(seed) and seed >= 0):
        raise GridError("seed", f"the seed must be None or an integer >= 0, got {seed!r}")
    if backend not in ("numpy", "andi"):
        raise GridError("backend", f"unknown backend {backend!r}; choose numpy or andi")
    alphas, Ds = grid.labels()
    measured = {"noise": noise, "exposure": exposure, "reduced_noise": reduced_noise}
    for name, setting in measured.items():
        _check_measurement_setting(name, setting)
    if _set(noise) and _set(reduced_noise):
        raise GridError("reduced_noise", "give noise or reduced_noise, not both")
    measuring = any(_set(v) for v in measured.values())
    if measuring and backend != "numpy":
        raise GridError("backend", "noise and exposure are simulated by the numpy backend only")
    labels = {"alpha": alphas, "D": Ds, "process": np.full(alphas.size, process)}
    if backend == "numpy":
        # Drawn from a stream of their own: the displacements' draws stay those of no noise.
        rng = np.random.default_rng(None if seed is None else [seed, 1])
        drawn = {k: draw_measurement(v, alphas.size, rng) for k, v in measured.items()}
        if np.any(drawn["reduced_noise"] != 0):
            drawn["noise"] = np.sqrt(drawn["reduced_noise"] * 2 * Ds)
        else:
            del drawn["reduced_noise"]
        dx = simulate(
            process, alphas, Ds, grid.n_steps, dim=dim, seed=seed, dtype=dtype,
            progress=progress, noise=drawn["noise"], exposure=drawn["exposure"],
        )  # fmt: skip
        if measuring:
            labels.update(drawn)
    else:
        dx = andi.simulate(
            process, alphas, Ds, grid.n_steps, dim=dim, seed=seed, progress=progress
        ).astype(dtype)
    meta = {
        "generator": f"minrep.datasets ({backend} backend)",
        "minrep_version": __version__,
        "numpy_version": np.__version__,
        "process": process,
        "preset": preset,
        "grid": {
            "alpha": list(grid.alpha),
            "D": list(grid.D),
            "n_per_cell": grid.n_per_cell,
            "n_positions": grid.n_positions,
        },
        "dim": dim,
        "seed": seed,
    }
    if measuring:
        meta["measurement"] = {
            k: np.atleast_1d(v).tolist()
            for k, v in measured.items()
            if k != "reduced_noise" or _set(v)
        }
    if backend == "andi":
        meta["andi_datasets_version"] = andi.installed_version()
    return Trajectories(dx, labels=labels, meta=meta)


TEST_EXPOSURE_LEVELS = 5
"""Exposures of a test set for a model trained with motion blur: a few levels over its range,
so that the exact likelihood costs few decompositions (:func:`minrep.stats.bayes_estimate`)."""


def paper_test_set(
    process: str,
    *,
    dim: int = 1,
    training_range: dict | None = None,
    n_per_cell: int | None = None,
    seed: int = 0,
    progress: bool = False,
):
    """The ``paper-test`` grid of ``process`` as a model trained on ``training_range``
    (:func:`minrep.train.training_range`) reads tracks: in ``dim`` dimensions and, for a model
    trained with a measurement, with the localisation error (its ``reduced_noise`` range) and
    motion blur (:data:`TEST_EXPOSURE_LEVELS` levels over its ``exposure`` range) drawn per
    trajectory. The error is drawn relative to the motion in a frame, as
    ``--reduced-noise`` simulates it; a model trained with an absolute ``--noise`` over a
    range of D records the ratio's whole span, and is tested over it at every D."""
    ranges = training_range or {}
    measurement = {}
    if "reduced_noise" in ranges:
        measurement["reduced_noise"] = tuple(ranges["reduced_noise"])
    if "exposure" in ranges:
        measurement["exposure"] = (*ranges["exposure"], TEST_EXPOSURE_LEVELS)
    return make_dataset(
        process, "paper-test", n_per_cell=n_per_cell, dim=dim, seed=seed, progress=progress,
        **measurement,
    )  # fmt: skip


def _set(setting) -> bool:
    """Whether a measurement setting (a value, a range or levels) is anything but 0."""
    return bool(np.any(np.atleast_1d(np.asarray(setting, dtype=float))[:2] != 0))


def _check_measurement_setting(name: str, setting) -> None:
    values = np.atleast_1d(np.asarray(setting, dtype=float))
    upper = 1.0 if name == "exposure" else math.inf
    bad = values.size not in (1, 2, 3) or not np.all(np.isfinite(values))
    if values.size == 3:
        bad = bad or not (values[2] >= 2 and values[2] == int(values[2]))
        values = values[:2]
    if bad:
        raise GridError(
            name,
            f"{name} must be a number, a range (low, high) or levels (low, high, count), "
            f"got {setting!r}",
        )
    if (values < 0).any() or (values > upper).any() or values[0] > values[-1]:
        what = "0 <= low <= high <= 1" if name == "exposure" else "0 <= low <= high"
        raise GridError(name, f"{name} must satisfy {what}, got {setting!r}")
