"""Tests of minrep.estimation and `minrep estimate`: alpha and D with intervals, in units."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import minrep
from minrep import datasets, estimation, io
from minrep.cli import app
from minrep.model import VAE, ModelConfig
from test_io import TRACKMATE_HEADER


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def fbm():
    return estimation.model_calibration("fbm")


def fresh_tracks(n: int, seed: int, process: str = "fbm", dim: int = 1) -> io.Trajectories:
    """Tracks of the shipped models' training range (uniform alpha and log10 D), lengths
    log-uniform over 33-399 displacements: like the calibration's, other draws."""
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(0.2, 1.8, n) if process != "bm" else np.ones(n)
    log10_d = rng.uniform(-5, -2, n)
    n_steps = np.round(np.exp(rng.uniform(math.log(33), math.log(399), n))).astype(int)
    return estimation._simulate(process, alpha, 10**log10_d, n_steps, dim, rng)


@pytest.mark.slow
def test_intervals_cover_90_percent_in_every_length_class(fbm):
    # The bar: 87-93 % per parameter and length class; 2,000 tracks per class give a
    # coverage to +-0.7 % (one standard error), so the bar is 4 standard errors wide.
    model, calibration = fbm
    tracks = fresh_tracks(6000, seed=11)
    table = estimation.estimate(model, tracks, calibration)
    truth = {"alpha": tracks.alpha, "D": tracks.D}
    length = tracks.step_counts()
    for low, high in ((33, 70), (70, 170), (170, 400)):
        rows = (length >= low) & (length < high)
        assert rows.sum() > 1500
        for name, values in truth.items():
            inside = (table[f"{name}_low"] <= values) & (values <= table[f"{name}_high"])
            coverage = inside[rows].mean()
            assert 0.87 <= coverage <= 0.93, (name, low, high, coverage)


@pytest.mark.slow
def test_intervals_cover_90_percent_at_the_longest_length(fbm):
    # Coverage at one length, not only on average over a class of lengths: one conformal
    # quantile per class covered 87-88 % at the training length. 2,000 tracks: one standard
    # error 0.7 %, the bar 4 wide.
    model, calibration = fbm
    rng = np.random.default_rng(12)
    n = 2000
    alpha, D = rng.uniform(0.2, 1.8, n), 10 ** rng.uniform(-5, -2, n)
    tracks = estimation._simulate("fbm", alpha, D, np.full(n, 399), 1, rng)
    table = estimation.estimate(model, tracks, calibration)
    for name, truth in (("alpha", alpha), ("D", D)):
        inside = (table[f"{name}_low"] <= truth) & (truth <= table[f"{name}_high"])
        assert 0.87 <= inside.mean() <= 0.93, (name, inside.mean())


def test_calibrations_with_one_quantile_per_length_class_still_work():
    # Calibrations written before 2026-11-28 keep a quantile per class of lengths.
    older = estimation.ParameterMap(
        degree=1, value=[0.5, 2.0], log_scale=[0, 0, 0], length_edges=[9, 50], quantiles=[3, 2]
    )
    value, half = older.predict(np.array([[0.0], [1.0]]), np.array([20, 399]))
    np.testing.assert_allclose(value, [0.5, 2.5])
    np.testing.assert_allclose(half, [3.0, 2.0])
    newer = estimation.ParameterMap(
        1, [0.5, 2.0], [0, 0, 0], quantile_lengths=[10, 40], quantile_values=[3.0, 2.0]
    )
    # interpolated in log length between the calibration's lengths, held beyond them
    np.testing.assert_allclose(newer.quantile(np.array([5, 10, 20, 40, 399])), [3, 3, 2.5, 2, 2])
    # each quantile from at least 400 held-out tracks: neighbouring lengths pooled
    assert estimation._pools(np.array([800] * 3), 400) == [[0], [1], [2]]
    assert estimation._pools(np.array([100] * 10), 400) == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]]
    assert estimation._pools(np.array([500, 500, 100]), 400) == [[0], [1, 2]]


def test_scaling_a_track_scales_d_by_c_squared_and_nothing_else(fbm):
    model, calibration = fbm
    tracks = fresh_tracks(40, seed=3)
    c = 1234.5  # far outside the training grid's D once squared
    bigger = io.Trajectories(tracks.displacements * c, tracks.labels, tracks.meta, tracks.lengths)
    one = estimation.estimate(model, tracks, calibration)
    other = estimation.estimate(model, bigger, calibration)
    for column in ("alpha", "alpha_low", "alpha_high"):
        np.testing.assert_allclose(other[column], one[column], atol=1e-5)
    for column in ("D", "D_low", "D_high"):
        np.testing.assert_allclose(other[column], one[column] * c**2, rtol=1e-4)


def test_physical_units_and_what_files_state(fbm):
    model, calibration = fbm
    tracks = fresh_tracks(10, seed=4)
    frames = estimation.estimate(model, tracks, calibration)
    physical = estimation.estimate(model, tracks, calibration, pixel_size=0.1, frame_interval=0.05)
    expected = frames["D"] * 0.1**2 / 0.05 ** frames["alpha"]
    np.testing.assert_allclose(physical["D"], expected, rtol=1e-6)
    np.testing.assert_allclose(physical["alpha"], frames["alpha"])
    assert estimation.units({}, None, None) == (1.0, 1.0, "pixel^2/frame^alpha")
    assert estimation.units({}, 0.1, 0.05) == (0.1, 0.05, "um^2/s^alpha")
    trackmate = {"length_unit": "um", "time_unit": "s", "frame_interval": 0.2}
    assert estimation.units(trackmate, None, None) == (1.0, 0.2, "um^2/s^alpha")
    with pytest.raises(estimation.EstimateError, match="would scale them twice"):
        estimation.units(trackmate, 0.1, None)
    with pytest.raises(estimation.EstimateError, match="pixel_size must be a positive number"):
        estimation.estimate(model, tracks, calibration, pixel_size=-1.0)


def test_calibration_is_json_and_bad_files_are_refused(fbm, tmp_path):
    _, calibration = fbm
    path = calibration.save(tmp_path / "calibration.json")
    assert estimation.Calibration.load(path) == calibration
    (tmp_path / "bad.json").write_text('{"process": "fbm"}')
    with pytest.raises(estimation.EstimateError, match="not a minrep calibration"):
        estimation.Calibration.load(tmp_path / "bad.json")
    with pytest.raises(estimation.EstimateError, match="no such file"):
        estimation.Calibration.load(tmp_path / "absent.json")


def test_brownian_model_gives_alpha_one_and_a_1d_model_estimates_each_axis():
    table = minrep.estimate("bm", datasets.make_dataset("bm", D=(1e-3,), n_per_cell=5, dim=2))
    assert list(table["axis"][:4]) == ["x", "y", "x", "y"]
    assert (table["alpha"] == 1).all() and (table["alpha_low"] == 1).all()
    # Var(dx) = 2D: every estimate near 1e-3, every interval holding it but rarely
    assert np.all(np.abs(np.log10(table["D"]) + 3) < 0.2)
    assert table["D_unit"].iloc[0] == "pixel^2/frame^alpha"


def test_estimate_command(tmp_path):
    tracks = fresh_tracks(6, seed=5)
    path = io.write_tracks(tracks, tmp_path / "tracks.csv")
    out = tmp_path / "estimates.csv"
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["estimate", "fbm", str(path), "-o", str(out), "--pixel-size", "0.1",
         "--frame-interval", "0.05"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table.columns) == [
        "particle", "n_steps", "alpha", "alpha_low", "alpha_high", "D", "D_low", "D_high",
        "D_unit",
    ]  # fmt: skip
    assert len(table) == 6 and (table["D_unit"] == "um^2/s^alpha").all()
    assert (table["alpha_low"] < table["alpha"]).all() and (table["D"] < table["D_high"]).all()
    result = runner.invoke(app, ["estimate", "fbm", str(path), "-o", str(out), "--pixel-size", "0"])
    assert result.exit_code == 2 and "--pixel-size must be a positive number" in result.output


def test_estimate_command_flags_for_tracking_files_only(tmp_path):
    data = io.save_npz(datasets.make_dataset("fbm", n_per_cell=1), tmp_path / "set.npz")
    out = tmp_path / "estimates.csv"
    result = CliRunner().invoke(app, ["estimate", "fbm", str(data), "-o", str(out), "--split-gaps"])
    assert result.exit_code == 2 and "--split-gaps is for tracking files" in result.output
    assert not out.exists()


def test_a_model_trained_with_a_measurement_estimates_noise_and_exposure():
    """Conformal intervals cover 90 % whatever the model (here an untrained one, whose
    intervals are wide): noise and exposure of fresh measured tracks, per length class; the
    noise is in length units, scaled with the track, and the exposure is not."""
    torch.manual_seed(0)  # the untrained network, hence the intervals' widths, fixed
    model = VAE(ModelConfig(decoder="whole", scale_equivariant=True))
    model.training_range = {
        "alpha": [0.2, 1.8], "D": [1e-5, 1e-2], "reduced_noise": [0.0, 1.0], "exposure": [0.0, 1.0]
    }  # fmt: skip
    calibration = estimation.calibrate(model, "fbm", longest=60, n_tracks=4000, seed=1)
    assert {"noise_ratio", "exposure"} <= set(calibration.parameters)
    # the measurement's signature in the displacements joins the latents as features
    assert calibration.correlation_lags == estimation.MEASUREMENT_LAGS
    assert calibration.training_range["exposure"] == [0.0, 1.0]
    rng = np.random.default_rng(5)
    n = 6000
    alpha, D = rng.uniform(0.2, 1.8, n), 10 ** rng.uniform(-5, -2, n)
    noise, exposure = np.sqrt(2 * rng.uniform(0, 1, n) * D), rng.uniform(0, 1, n)
    lengths = np.unique(np.geomspace(model.config.min_steps, 60, estimation.LENGTHS).round())
    n_steps = rng.choice(lengths.astype(int), n)  # as the calibration draws them
    tracks = estimation._simulate("fbm", alpha, D, n_steps, 1, rng, noise, exposure)
    table = estimation.estimate(model, tracks, calibration)
    classes = np.searchsorted(np.quantile(n_steps, [0.25, 0.5, 0.75]), n_steps, side="right")
    for name, truth in (("noise", noise), ("exposure", exposure)):
        inside = (table[f"{name}_low"] <= truth) & (truth <= table[f"{name}_high"])
        for k in np.unique(classes):
            # about 1,500 tracks per class: one standard error 0.8 %, the bar 4 wide
            assert 0.87 <= inside[classes == k].mean() <= 0.93, (
                name,
                k,
                inside[classes == k].mean(),
            )
    assert (table["exposure_low"] >= 0).all() and (table["exposure_high"] <= 1).all()
    in_units, unit = estimation.estimate_in_units(model, tracks, calibration, 0.1, 0.05)
    assert unit == "um^2/s^alpha" and (in_units["noise_unit"] == "um").all()
    np.testing.assert_allclose(in_units["noise"], table["noise"] * 0.1, rtol=1e-4)
    scaled = io.Trajectories(tracks.displacements * 7.0, tracks.labels, tracks.meta, tracks.lengths)
    again = estimation.estimate(model, scaled, calibration, pixel_size=0.1)
    np.testing.assert_allclose(again["noise"], table["noise"] * 0.7, rtol=1e-4)
    np.testing.assert_allclose(again["exposure"], table["exposure"], rtol=1e-4, atol=1e-6)


def test_the_same_tracks_in_every_tracking_format_give_identical_estimates(tmp_path):
    """trackpy CSV, TrackMate spots CSV, TrackMate XML and AnDi 2024 CSV of the same positions
    (in micrometres, 0.1 s per frame; stated by the TrackMate files, given as options for the
    others) give the same estimates, bit for bit."""
    tracks = fresh_tracks(4, seed=8, dim=2)
    rng = np.random.default_rng(3)
    positions = []  # (particle, frame, x, y) as text, in micrometres
    for i in range(len(tracks)):
        dx = tracks.trajectory(i).astype(np.float64) * 3e2  # a few tenths of a micrometre
        xy = np.concatenate([np.zeros((2, 1)), np.cumsum(dx, axis=1)], axis=1)
        xy += rng.uniform(5, 50, (2, 1))
        positions += [(i, t, repr(xy[0, t]), repr(xy[1, t])) for t in range(xy.shape[1])]
    files = {
        "trackpy.csv": "y,x,frame,particle\n"
        + "".join(f"{y},{x},{t},{i}\n" for i, t, x, y in positions),
        "andi.csv": "traj_idx,frame,x,y\n"
        + "".join(f"{i},{t},{x},{y}\n" for i, t, x, y in positions),
        "trackmate.csv": TRACKMATE_HEADER
        + "".join(
            f"ID{k},{k},{i},1.0,{x},{y},0.0,{0.1 * t!r},{t},0.5\n"
            for k, (i, t, x, y) in enumerate(positions)
        ),
        "trackmate.xml": '<Tracks nTracks="4" spaceUnits="micron" frameInterval="0.1" '
        'timeUnits="sec">\n'
        + "".join(
            f"<particle>\n{body}</particle>\n"
            for body in (
                "".join(
                    f'<detection t="{t}" x="{x}" y="{y}" z="0.0" />\n'
                    for j, t, x, y in positions
                    if j == i
                )  # fmt: skip
                for i in range(len(tracks))
            )
        )
        + "</Tracks>\n",
    }
    tables = {}
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text)
        units = (
            [] if name.startswith("trackmate") else ["--pixel-size", "1", "--frame-interval", "0.1"]
        )
        out = tmp_path / f"{name}.estimates.csv"
        result = CliRunner().invoke(app, ["estimate", "fbm", str(path), "-o", str(out), *units])
        assert result.exit_code == 0, (name, result.output)
        tables[name] = pd.read_csv(out)
    reference = tables.pop("trackpy.csv")
    assert len(reference) == 2 * len(tracks) and (reference["D_unit"] == "um^2/s^alpha").all()
    for name, table in tables.items():
        assert table["particle"].astype(str).tolist() == reference["particle"].astype(str).tolist()
        pd.testing.assert_frame_equal(
            table.drop(columns="particle"),
            reference.drop(columns="particle"),
            check_exact=True,
            obj=name,
        )


def test_displacement_correlations_of_the_calibration_features(fbm):
    """Pooled over coordinates and time, padding ignored: +1 for a constant step, -1 for
    alternating steps, 0 where the track is shorter than the lag; none for the shipped 1D
    models, whose calibrations were written before (and whose tracks have no measurement)."""
    steps = np.full((3, 2, 6), np.nan, dtype=np.float32)
    steps[0] = 1.0
    steps[1] = [[1, -1, 1, -1, 1, -1], [2, -2, 2, -2, 2, -2]]
    steps[2, :, :2] = [[1, -1], [1, -1]]
    tracks = io.Trajectories(steps, lengths=np.array([6, 6, 2]))
    correlations = estimation._correlations(tracks, [1, 2])
    np.testing.assert_allclose(correlations[0], [5 / 6, 4 / 6])
    np.testing.assert_allclose(correlations[1], [-5 / 6, 4 / 6])
    np.testing.assert_allclose(correlations[2], [-1 / 2, 0.0])
    assert fbm[1].correlation_lags == []
