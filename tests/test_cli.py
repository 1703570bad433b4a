"""Tests of the minrep command line: each command against the library call it wraps."""

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from minrep import andi, datasets, io, processes
from minrep.cli import app, parse_values

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_parse_values():
    assert parse_values("0.5") == (0.5,)
    assert parse_values("0.2,1.0") == (0.2, 1.0)
    np.testing.assert_allclose(parse_values("0.2:1.8:5"), np.linspace(0.2, 1.8, 5))
    np.testing.assert_allclose(parse_values("1e-5:1e-2:4", log=True), np.geomspace(1e-5, 1e-2, 4))
    assert parse_values(None) is None


def test_simulate_writes_the_requested_grid(tmp_path):
    out = tmp_path / "fbm.npz"
    args = (
        "simulate",
        "fbm",
        "-o",
        out,
        "--alpha",
        "0.5,1.5",
        "--D",
        "1e-4:1e-2:3",
        "--n-per-cell",
        4,
        "--length",
        50,
        "--dim",
        2,
        "--seed",
        3,
    )
    result = run(*args)
    assert result.exit_code == 0, result.output
    data = io.load_npz(out)
    assert data.displacements.shape == (2 * 3 * 4, 2, 49)
    assert sorted(set(data.alpha)) == [0.5, 1.5]
    np.testing.assert_allclose(sorted(set(data.D)), [1e-4, 1e-3, 1e-2])
    assert data.process == "fbm" and data.meta["seed"] == 3
    expected = datasets.make_dataset(
        "fbm",
        alpha=(0.5, 1.5),
        D=np.geomspace(1e-4, 1e-2, 3),
        n_per_cell=4,
        n_positions=50,
        dim=2,
        seed=3,
    )
    np.testing.assert_array_equal(data.displacements, expected.displacements)
    # Same seed, same bytes.
    again = tmp_path / "again.npz"
    assert run(*args[:3], again, *args[4:]).exit_code == 0
    assert io.load_npz(again).displacements.tobytes() == data.displacements.tobytes()


def test_simulate_bad_input_is_one_clear_line(tmp_path):
    result = run("simulate", "fbm", "-o", tmp_path / "x.npz", "--alpha", "2.5")
    assert result.exit_code == 2
    assert "alpha = 2.5 is outside the range of fbm" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.npz").exists()
    result = run("simulate", "fbm", "-o", tmp_path / "x.npz", "--alpha", "0.2:x")
    assert result.exit_code == 2 and "start:stop:count" in result.output
    result = run("simulate", "levy", "-o", tmp_path / "x.npz")
    assert result.exit_code == 2 and "unknown process 'levy'" in result.output


def test_simulate_andi_backend_without_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(andi, "installed_version", lambda: None)
    result = run("simulate", "ctrw", "-o", tmp_path / "x.npz", "--backend", "andi")
    assert result.exit_code == 2
    assert "pip install 'minrep[andi]'" in result.output


def test_exact_nll_command_reports_the_library_value(tmp_path):
    data = datasets.make_dataset("sbm", n_per_cell=5, n_positions=80, seed=1)
    path = io.save_npz(data, tmp_path / "sbm.npz")
    result = run("exact-nll", path, "--start", 10)
    assert result.exit_code == 0, result.output
    value = float(re.search(r"exact NLL (-?\d+\.\d+)", result.output).group(1))
    expected = processes.exact_nll(data.displacements, "sbm", data.alpha, data.D, start=10)
    assert value == pytest.approx(expected.mean(), abs=1e-5)


def test_exact_nll_needs_labels(tmp_path):
    path = io.save_npz(io.Trajectories(np.zeros((3, 1, 50))), tmp_path / "bare.npz")
    result = run("exact-nll", path)
    assert result.exit_code == 2 and "needs labels alpha, D" in result.output
    short = io.save_npz(
        datasets.make_dataset("bm", n_per_cell=1, n_positions=20), tmp_path / "s.npz"
    )
    result = run("exact-nll", short, "--start", 32)
    assert result.exit_code == 2 and "minimum of 33 displacements" in result.output


def test_demo_on_a_users_unlabelled_2d_file(tmp_path):
    data = datasets.make_dataset("bm", D=(1e-3,), n_per_cell=6, n_positions=80, dim=2, seed=1)
    path = io.write_tracks(io.Trajectories(data.displacements), tmp_path / "mine.csv")
    result = run("demo", "--data", path, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "each axis encoded as a 1D trajectory" in result.output
    assert "no labels, so no readout" in result.output
    assert (tmp_path / "out" / "latents.csv").is_file()
