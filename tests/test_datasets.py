"""Tests of minrep.datasets: the paper's grids, presets with overrides, make_dataset, and the
grid-value parser."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from minrep.datasets import (
    PRESETS,
    TEST_EXPOSURE_LEVELS,
    GridError,
    make_dataset,
    paper_test_set,
    parse_range,
    parse_values,
    preset_grid,
)
from minrep.io import Trajectories
from minrep.processes import SimulationError, simulate


def test_data_modules_import_without_torch():
    # Simulation, files and statistics start fast and run where torch is not installed.
    code = (
        "import sys, minrep.io, minrep.processes, minrep.stats, minrep.datasets; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_andi_imports_first_without_a_cycle():
    # andi used to import processes, which imported andi: each now imports alone, first.
    for module in ("minrep.andi", "minrep.datasets"):
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)


def test_parse_values():
    assert parse_values("0.5") == (0.5,)
    assert parse_values("0.2,1.0") == (0.2, 1.0)
    np.testing.assert_allclose(parse_values("0.2:1.8:5"), np.linspace(0.2, 1.8, 5))
    # D is spaced logarithmically: equal ratios, both ends included.
    d = parse_values("1e-5:1e-2:4", log=True)
    np.testing.assert_allclose(d, [1e-5, 1e-4, 1e-3, 1e-2], rtol=1e-12)
    assert parse_values("-4:4:3") == (-4.0, 0.0, 4.0)
    for bad in ("0.2:x", "1:2", "1:2:3:4", "1:2:0", "", "a,b"):
        with pytest.raises(ValueError, match="start:stop:count"):
            parse_values(bad)


def test_make_dataset_reproducible():
    kwargs = dict(preset="small", n_per_cell=3, n_positions=40, dim=2)
    a = make_dataset("fbm", seed=5, **kwargs)
    b = make_dataset("fbm", seed=5, **kwargs)
    c = make_dataset("fbm", seed=6, **kwargs)
    assert a.displacements.tobytes() == b.displacements.tobytes()
    assert not np.array_equal(a.displacements, c.displacements)
    for name in ("alpha", "D", "process"):
        assert np.array_equal(a.labels[name], b.labels[name])
    assert a.meta == b.meta


# ---------------------------------------------------------------------------------------------
# Presets


def test_paper_preset():
    grid = preset_grid("fbm", "paper")
    assert len(grid.alpha) == 21 and len(grid.D) == 10
    assert grid.n_per_cell == 476 and grid.n_positions == 400 and grid.n_steps == 399
    assert grid.n_trajectories == 99_960
    assert grid.alpha[0] == pytest.approx(0.2) and grid.alpha[-1] == pytest.approx(1.8)
    assert 1.0 in grid.alpha  # the BM point is on the grid exactly
    assert grid.D[0] == pytest.approx(1e-5) and grid.D[-1] == pytest.approx(1e-2)
    alpha, D = grid.labels()
    assert alpha.shape == D.shape == (99_960,)
    assert alpha.dtype == D.dtype == np.float64
    # Cell by cell, alpha slowest: the first 476 share (alpha_0, D_0), the next (alpha_0, D_1).
    assert np.all(alpha[:476] == grid.alpha[0]) and np.all(D[:476] == grid.D[0])
    assert np.all(D[476 : 2 * 476] == grid.D[1]) and np.all(alpha[: 10 * 476] == grid.alpha[0])
    # Every cell has exactly n_per_cell trajectories.
    _, counts = np.unique(np.stack([alpha, D]), axis=1, return_counts=True)
    assert counts.size == 210 and np.all(counts == 476)


def test_paper_test_preset():
    grid = preset_grid("sbm", "paper-test")
    assert (len(grid.alpha), len(grid.D), grid.n_per_cell) == (49, 49, 41)
    assert grid.n_trajectories == 49 * 49 * 41 == 98_441


def test_bm_preset_has_alpha_one_and_same_count():
    for preset in PRESETS:
        fbm, bm = preset_grid("fbm", preset), preset_grid("bm", preset)
        assert bm.alpha == (1.0,)
        assert bm.D == fbm.D
        assert bm.n_trajectories == fbm.n_trajectories
        assert bm.n_per_cell == fbm.n_per_cell * len(fbm.alpha)


def test_preset_overrides():
    grid = preset_grid("fbm", "paper", alpha=[0.5, 1.5], D=2.0, n_per_cell=7, n_positions=65)
    assert grid.alpha == (0.5, 1.5)
    assert grid.D == (2.0,)
    assert grid.n_per_cell == 7 and grid.n_positions == 65 and grid.n_steps == 64
    assert grid.n_trajectories == 14
    # None means "keep the preset's value".
    assert preset_grid("fbm", "small", alpha=None, n_per_cell=None) == PRESETS["small"]
    # Overriding a BM preset's count replaces the multiplied count.
    assert preset_grid("bm", "paper", n_per_cell=3).n_trajectories == 30


@pytest.mark.parametrize(
    ("process", "low", "high", "open_low"),
    [("ctrw", 0.0, 1.0, True), ("lw", 1.0, 2.0, False), ("attm", 0.0, 1.0, True)],
)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_andi_only_presets_keep_admitted_alphas(process, low, high, open_low, preset):
    full = PRESETS[preset].alpha
    kept = preset_grid(process, preset).alpha
    admitted = tuple(a for a in full if (a > low if open_low else a >= low) and a <= high)
    assert kept == admitted
    assert 0 < len(kept) < len(full)
    if process in ("ctrw", "attm"):
        assert max(kept) == 1.0
    else:
        assert min(kept) == 1.0


def test_unknown_preset():
    with pytest.raises(SimulationError, match="unknown preset 'huge'"):
        preset_grid("fbm", "huge")


# ---------------------------------------------------------------------------------------------
# make_dataset


@pytest.mark.parametrize("process", ["bm", "fbm", "sbm"])
def test_make_dataset_labels_and_meta(process):
    data = make_dataset(process, "small", n_per_cell=2, n_positions=30, dim=2, seed=9)
    grid = preset_grid(process, "small", n_per_cell=2, n_positions=30)
    n = grid.n_trajectories
    assert isinstance(data, Trajectories)
    assert data.displacements.shape == (n, 2, 29) and data.displacements.dtype == np.float32
    assert set(data.labels) == {"alpha", "D", "process"}
    for name in ("alpha", "D", "process"):
        assert data.labels[name].shape == (n,)
    alpha, D = grid.labels()
    assert np.array_equal(data.labels["alpha"], alpha)
    assert np.array_equal(data.labels["D"], D)
    assert np.all(data.labels["process"] == process)
    assert data.process == process
    if process == "bm":
        assert np.all(data.labels["alpha"] == 1.0)
    meta = data.meta
    assert meta["seed"] == 9 and meta["process"] == process and meta["dim"] == 2
    assert meta["preset"] == "small"
    assert meta["grid"] == {
        "alpha": list(grid.alpha),
        "D": list(grid.D),
        "n_per_cell": 2,
        "n_positions": 30,
    }
    assert "numpy" in meta["generator"]
    # The data are what simulate() gives for these labels and seed.
    expected = simulate(process, alpha, D, 29, dim=2, seed=9)
    assert data.displacements.tobytes() == expected.tobytes()


def test_make_dataset_errors():
    with pytest.raises(SimulationError, match="unknown backend 'torch'"):
        make_dataset("fbm", n_per_cell=1, n_positions=10, backend="torch")
    with pytest.raises(SimulationError, match="n_positions >= 2"):
        make_dataset("fbm", n_per_cell=1, n_positions=1)
    with pytest.raises(SimulationError, match="outside the range of fbm"):
        make_dataset("fbm", alpha=[0.5, 2.0], n_per_cell=1, n_positions=10)


def test_unknown_process():
    with pytest.raises(SimulationError, match="unknown process 'levy'"):
        preset_grid("levy")


def test_bm_refuses_an_alpha_other_than_one():
    with pytest.raises(SimulationError, match="Brownian motion has alpha = 1"):
        make_dataset("bm", alpha=0.5, n_per_cell=1, n_positions=10)
    data = make_dataset("bm", alpha=1.0, n_per_cell=1, n_positions=10)
    assert set(data.alpha) == {1.0}


def test_andi_only_process_points_to_the_andi_backend():
    with pytest.raises(SimulationError, match="--backend andi"):
        make_dataset("ctrw", n_per_cell=1, n_positions=10)


def test_make_dataset_no_seed_is_fresh_randomness():
    kwargs = dict(alpha=(0.5,), D=(1e-3,), n_per_cell=2, n_positions=30)
    a, b = make_dataset("fbm", seed=None, **kwargs), make_dataset("fbm", seed=None, **kwargs)
    assert not np.array_equal(a.displacements, b.displacements)
    assert not np.array_equal(a.displacements, make_dataset("fbm", seed=0, **kwargs).displacements)
    assert a.meta["seed"] is None


def test_reduced_noise_is_relative_to_the_motion_in_a_frame():
    data = make_dataset("fbm", "small", n_per_cell=20, seed=1, reduced_noise=(0.0, 1.0))
    reduced, noise = data.labels["reduced_noise"], data.labels["noise"]
    assert reduced.min() >= 0 and reduced.max() <= 1 and np.unique(reduced).size == len(data)
    np.testing.assert_allclose(noise**2 / (2 * data.D), reduced, rtol=1e-12)
    assert data.meta["measurement"]["reduced_noise"] == [0.0, 1.0]
    assert data.measurement()["noise"] is not None
    # The lag-1 displacement correlation of a noisy alpha = 1 track is
    # -sigma^2 / (2 D + 2 sigma^2) = -r / (1 + 2 r): -1/3 at r = 1.
    bm = make_dataset("bm", D=(1e-3,), n_per_cell=2000, seed=2, reduced_noise=1.0)
    dx = bm.displacements[:, 0].astype(np.float64)
    lag_one = (dx[:, 1:] * dx[:, :-1]).mean() / (dx * dx).mean()
    assert lag_one == pytest.approx(-1 / 3, abs=0.01)  # standard error 0.0008
    with pytest.raises(GridError, match="not both"):
        make_dataset("fbm", "small", n_per_cell=2, noise=0.1, reduced_noise=0.5)


def test_measurement_drawn_per_trajectory_and_labelled():
    plain = make_dataset("fbm", "small", n_per_cell=5, seed=4)
    measured = make_dataset("fbm", "small", n_per_cell=5, seed=4, noise=(0.0, 0.01), exposure=1.0)
    assert "noise" not in plain.labels
    noise, exposure = measured.labels["noise"], measured.labels["exposure"]
    assert noise.min() >= 0 and noise.max() <= 0.01 and np.unique(noise).size == noise.size
    assert (exposure == 1.0).all()
    assert measured.meta["measurement"] == {"noise": [0.0, 0.01], "exposure": [1.0]}
    # The same seed gives the same measurement, and the noise its own stream: without it the
    # displacements are those of earlier versions.
    again = make_dataset("fbm", "small", n_per_cell=5, seed=4, noise=(0.0, 0.01), exposure=1.0)
    assert np.array_equal(again.displacements, measured.displacements)
    assert np.array_equal(again.labels["noise"], noise)
    assert not np.array_equal(plain.displacements, measured.displacements)
    for bad, field in (({"noise": -1.0}, "noise"), ({"exposure": (0.5, 0.2)}, "exposure")):
        with pytest.raises(GridError) as caught:
            make_dataset("fbm", "small", n_per_cell=2, **bad)
        assert caught.value.field == field


def test_exposure_on_levels_and_the_test_set_of_a_measured_model():
    levels = make_dataset("fbm", "small", n_per_cell=5, seed=4, exposure=(0.0, 1.0, 3))
    assert set(np.unique(levels.labels["exposure"])) == {0.0, 0.5, 1.0}
    assert parse_range("0:1:5") == (0.0, 1.0, 5) and parse_range("0:0.5") == (0.0, 0.5)
    assert "exposure" not in make_dataset("fbm", "small", n_per_cell=1, exposure=(0, 0, 3)).labels
    for spec in ("0:1:2.5", "0:1:1", "1:0:3", "0:1:2:3"):
        with pytest.raises(ValueError):
            parse_range(spec)
    with pytest.raises(GridError, match="levels"):
        make_dataset("fbm", "small", n_per_cell=2, exposure=(0.0, 1.0, 2.5))
    # A model trained on 2D tracks with a measurement is tested on such tracks: the paper-test
    # grid in 2D, the localisation error over its range, the exposure on a few levels.
    ranges = {"alpha": [0.2, 1.8], "D": [1e-5, 1e-2], "exposure": [0.1, 0.9],
              "reduced_noise": [0.0, 0.5]}  # fmt: skip
    test = paper_test_set("fbm", dim=2, training_range=ranges, n_per_cell=1, seed=3)
    assert test.dim == 2 and test.meta["preset"] == "paper-test"
    exposures = np.unique(test.labels["exposure"])
    np.testing.assert_allclose(exposures, np.linspace(0.1, 0.9, TEST_EXPOSURE_LEVELS))
    reduced = test.labels["reduced_noise"]
    assert reduced.min() >= 0 and reduced.max() <= 0.5 and np.unique(reduced).size == len(test)
    plain = paper_test_set(
        "fbm", training_range={"alpha": [0.2, 1.8], "D": [1e-5, 1e-2]}, n_per_cell=1
    )
    assert plain.dim == 1 and "noise" not in plain.labels and "exposure" not in plain.labels
