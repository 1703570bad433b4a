"""The shipped models, the demo, and axis-by-axis encoding of 2D tracking files."""

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import minrep
from minrep import checkpoint, datasets, io, processes
from minrep.analysis import YARDSTICKS, latent_statistics
from minrep.cli import app
from minrep.demo import run_demo
from minrep.encode import encode, encode_axes
from minrep.model import ModelConfig

MINIMAL = {"bm": 1, "fbm": 2, "sbm": 2}  # surviving latents of each process's shipped model
SHIPPED = sorted(p.name for p in checkpoint.PRETRAINED.iterdir() if p.is_dir())


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)


def test_every_process_has_a_shipped_model():
    # One model per exactly simulated process, named after it and trained on it; the
    # tests below run on each of them (not on whatever happens to be in the folder).
    assert set(MINIMAL) == set(processes.PROCESSES)
    for process in processes.PROCESSES:
        folder = checkpoint.PRETRAINED / process
        assert (folder / "model.safetensors").is_file(), f"no shipped model for {process}"
        assert checkpoint.read_config(process)["data"]["process"] == process
    assert set(processes.PROCESSES) <= set(SHIPPED)


@pytest.mark.parametrize("name", processes.PROCESSES)
def test_shipped_model_loads_with_its_recorded_config(name):
    model = minrep.load_model(name)
    folder = checkpoint.PRETRAINED / name
    recorded = json.loads((folder / "config.json").read_text())
    assert model.config == ModelConfig.from_dict(recorded["model"])
    assert model.config.scale_equivariant and model.config.latent_dim == 6
    assert recorded["data"]["process"] == name and model.config.dim == 1
    assert (folder / "MODEL_CARD.md").is_file() and (folder / "history.csv").is_file()
    assert sum(f.stat().st_size for f in folder.iterdir()) < 2_000_000


@pytest.mark.parametrize("name", processes.PROCESSES)
def test_shipped_model_keeps_its_minimal_latents_on_fresh_data(name):
    # 420 fresh trajectories of the training grid: the surviving latents carry 0.3-4 nat,
    # the others below 0.04 (model cards), far from the 0.1 nat threshold either way.
    data = datasets.make_dataset(name, "paper", n_per_cell=2, seed=2024)
    latents = encode(minrep.load_model(name), data)
    kept = latent_statistics(latents["mu"], latents["logvar"])["surviving"]
    assert len(kept) == MINIMAL[name]


def test_fbm_2d_is_a_model_of_recorded_2d_tracks():
    # The model for microscope tracks: 2D, trained with localisation error and blur over their
    # whole range and on prefixes down to 10 displacements, with its calibration for
    # `minrep estimate`; fresh recorded tracks keep the two latents of its card (KL 1.47 and
    # 2.86 nat, the others below 0.002).
    model = minrep.load_model("fbm-2d")
    assert model.config.dim == 2 and model.config.decoder == "whole"
    assert model.config.min_steps <= 19  # tracks of 20 positions
    ranges = model.training_range
    assert ranges["exposure"][1] > 0.99 and ranges["reduced_noise"][1] > 0.99
    folder = checkpoint.PRETRAINED / "fbm-2d"
    assert (folder / "calibration.json").is_file()
    assert sum(f.stat().st_size for f in folder.iterdir()) < 2_000_000
    measurement = {"reduced_noise": (0.0, 1.0), "exposure": (0.0, 1.0)}
    data = datasets.make_dataset("fbm", "paper", n_per_cell=2, dim=2, seed=2024, **measurement)
    latents = encode(model, data)
    kept = latent_statistics(latents["mu"], latents["logvar"])["surviving"]
    assert len(kept) == MINIMAL["fbm"]


@pytest.mark.slow
def test_demo_of_the_2d_model_of_recorded_tracks(tmp_path):
    lines = []
    page = run_demo(
        "fbm-2d", tmp_path / "demo", n_per_cell=1, echo=lines.append,
        generation={"n_steps": 800, "per_alpha": 4},
    )  # fmt: skip
    text = "\n".join(lines)
    assert page.is_file() and "in 2D" in text and "localisation error and motion blur" in text
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert len(metrics["surviving_latents"]) == MINIMAL["fbm"]
    read = set(metrics["latent_meaning"]["all"])
    assert read == {"alpha", "log10_D", "reduced_noise", "exposure"}


def test_demo_runs_end_to_end(tmp_path):
    lines = []
    page = run_demo(
        "fbm",
        tmp_path / "demo",
        n_per_cell=1,
        echo=lines.append,
        generation={"n_steps": 800, "per_alpha": 4},
    )
    text = "\n".join(lines)
    assert page.name == "index.html" and page.is_file()
    assert "surviving latents [" in text and "report:" in text
    # Every number comes with its yardstick: survival at 0.1 nat, the sign of the NLL gap,
    # what a good MIG, DCI and alpha_g error are.
    words = " ".join(text.split())  # the yardsticks are wrapped
    assert "0.1 nat" in words
    for kind in ("kl_per_latent", "r2", "nll_gap", "mig", "dci", "alpha_g_error"):
        assert " ".join(YARDSTICKS[kind].split()) in words, kind
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert len(metrics["surviving_latents"]) == 2
    for latent in metrics["surviving_latents"]:
        sweep = io.load_npz(tmp_path / "demo" / f"sweep_latent_{latent}.npz")
        assert len(sweep) == 600


def _tracks_2d(D_x, D_y, n=40, seed=0):
    x = datasets.make_dataset("fbm", alpha=(0.5,), D=(D_x,), n_per_cell=n, seed=seed)
    y = datasets.make_dataset("fbm", alpha=(0.5,), D=(D_y,), n_per_cell=n, seed=seed + 1)
    return io.Trajectories(np.concatenate([x.displacements, y.displacements], axis=1))


def test_a_2d_tracking_file_is_encoded_axis_by_axis(tmp_path):
    path = io.write_tracks(_tracks_2d(1e-3, 1e-3), tmp_path / "tracks.csv")
    result = CliRunner().invoke(app, ["encode", "fbm", str(path), "-o", str(tmp_path / "z.csv")])
    assert result.exit_code == 0, result.output
    assert "each axis was encoded as its own 1D trajectory" in result.output
    with open(tmp_path / "z.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40
    assert {"mu_x_0", "mu_y_5", "mu_combined_0", "axes_agree"} <= set(rows[0])
    # Same law on both axes: the axes agree for nearly every track (3-sigma rule per latent).
    agree = np.array([r["axes_agree"] == "True" for r in rows])
    assert agree.mean() > 0.8
    # A 100-fold different D between the axes (2 in log10 D) is caught.
    path = io.write_tracks(_tracks_2d(1e-4, 1e-2), tmp_path / "aniso.csv")
    latents = encode_axes(minrep.load_model("fbm"), io.load(path))
    assert latents["axes_agree"].mean() < 0.1
    assert np.isnan(latents["mu_combined"][~latents["axes_agree"]]).all()
