"""Tests of minrep.encode and ``minrep encode``: latents of variable-length tracks, each as it
would be encoded alone, and short tracks refused unless skipped."""

import csv
import re
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from minrep import datasets, io
from minrep.checkpoint import save_model
from minrep.cli import app
from minrep.encode import EncodingError, encode, encode_axes, save_latents
from minrep.model import VAE, ModelConfig


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)


def test_encode_variable_length_tracks(tmp_path):
    model = VAE(ModelConfig(dim=2)).eval()
    run = tmp_path / "model"
    save_model(model, run)
    parts = [
        datasets.make_dataset(
            "fbm", alpha=(0.7,), D=(1e-3,), n_per_cell=3, n_positions=n, dim=2, seed=n
        )
        for n in (40, 70, 100)
    ]
    tracks = []
    for part in parts:
        for i in range(len(part)):
            tracks.append(part.subset([i]).displacements[0])
    lengths = [t.shape[-1] for t in tracks]
    padded = np.full((len(tracks), 2, max(lengths)), np.nan, dtype=np.float32)
    for i, t in enumerate(tracks):
        padded[i, :, : t.shape[-1]] = t
    data = io.Trajectories(padded, {"particle": np.arange(len(tracks)) + 100}, lengths=lengths)
    csv_path = io.write_tracks(data, tmp_path / "tracks.csv")
    result = CliRunner().invoke(
        app, ["encode", str(run), str(csv_path), "-o", str(tmp_path / "latents.csv")]
    )
    assert result.exit_code == 0, result.output
    with open(tmp_path / "latents.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["particle"]) for r in rows] == list(range(100, 109))
    assert [int(r["n_steps"]) for r in rows] == lengths
    read = io.read_tracks(csv_path)
    latents = encode(model, read)
    for i in range(len(read)):  # each encoded as it would be alone
        alone, _ = model.encode(torch.from_numpy(read.trajectory(i)[None]))
        # Up to float32 round-off: kernels sum in another order for another batch size.
        np.testing.assert_allclose(
            latents["mu"][i], alone[0].detach().numpy(), rtol=1e-4, atol=1e-5
        )
        assert float(rows[i]["mu_0"]) == pytest.approx(float(latents["mu"][i, 0]), rel=1e-6)
    out = CliRunner().invoke(
        app, ["encode", str(run), str(csv_path), "-o", str(tmp_path / "latents.npz")]
    )
    assert out.exit_code == 0
    with np.load(tmp_path / "latents.npz") as saved:
        assert saved["mu"].shape == (9, 6) and list(saved["particle"]) == list(range(100, 109))
    with pytest.raises(EncodingError, match="dim 2"):
        encode(model, datasets.make_dataset("bm", n_per_cell=1, n_positions=50))


def test_encode_refuses_short_tracks_unless_skipped(tmp_path):
    save_model(VAE(ModelConfig()), tmp_path / "m")
    data = io.Trajectories(np.ones((2, 1, 60), np.float32), lengths=[60, 20])
    csv_path = io.write_tracks(data, tmp_path / "t.csv")
    result = CliRunner().invoke(
        app, ["encode", str(tmp_path / "m"), str(csv_path), "-o", str(tmp_path / "l.csv")]
    )
    assert result.exit_code == 2 and "minimum of 33 displacements" in result.output
    skip = ["encode", str(tmp_path / "m"), str(csv_path), "-o", str(tmp_path / "l.csv")]
    with pytest.warns(UserWarning, match="particle 1 .* skipped"):
        result = CliRunner().invoke(app, [*skip, "--skip-short"])
    assert result.exit_code == 0 and "1 trajectories encoded" in result.output


def fbm(n=4, positions=60, seed=0):
    data = datasets.make_dataset(
        "fbm", alpha=(0.7,), D=(1e-2,), n_per_cell=n, n_positions=positions, seed=seed
    )
    data.labels["particle"] = np.arange(len(data)) + 40
    return data


@pytest.mark.parametrize(
    ("factor", "reason"),
    [
        (1e20, "too large for the model's float32 arithmetic; express the data in larger units"),
        (1e-24, "too small for the model's float32 arithmetic; express the data in smaller units"),
    ],
)
def test_displacements_beyond_float32_arithmetic_are_refused_naming_them(factor, reason):
    model = VAE(ModelConfig(scale_equivariant=True)).eval()
    data = fbm()
    scaled = data.displacements.astype(np.float64)
    scaled[[1, 3]] *= factor  # fine in float32 (1e18, 1e-26), but not their squares
    with pytest.raises(
        EncodingError,
        match=re.escape(
            f"tracks.csv: the displacements of 2 trajectories (1 (particle 41), 3 "
            f"(particle 43)) are {reason}"
        ),
    ):
        encode(model, io.Trajectories(scaled, data.labels), source="tracks.csv")
    # Up to the edge of the range the encoding is scale-equivariant: a change of units moves
    # only the latents' scale input, and every latent is finite.
    for edge in (1e16, 1e-17):
        latents = encode(model, io.Trajectories(data.displacements * edge, data.labels))
        assert np.isfinite(latents["mu"]).all() and np.isfinite(latents["logvar"]).all()


def test_non_finite_latents_are_refused_naming_the_trajectories():
    data = fbm()
    huge = data.displacements.copy()
    huge[2, 0, 5] = 1e12
    # The paper's network (no rescaling) with first-layer weights of 1e28: a displacement of
    # 1e12 overflows float32 (1e40) where the others (< 1) stay finite.
    torch.manual_seed(0)
    model = VAE(ModelConfig.published()).eval()
    with torch.no_grad():
        model.encoder.convs[0].weight.fill_(1e28)
    with pytest.raises(
        EncodingError,
        match=re.escape("not finite (NaN or infinity) for trajectory 2 (particle 42)"),
    ):
        encode(model, io.Trajectories(huge, data.labels), source="x.npz")
    assert np.isfinite(encode(model, data)["mu"]).all()  # the others alone are fine
    broken = VAE(ModelConfig()).eval()
    with torch.no_grad():
        broken.encoder.latent.weight[0, 0] = float("nan")
    with pytest.raises(EncodingError, match="for 4 trajectories .* or a broken model"):
        encode(broken, data)


def test_a_trajectory_that_never_moves_gets_a_warning_naming_it():
    model = VAE(ModelConfig()).eval()
    data = fbm()
    still = data.displacements.copy()
    still[1] = 0.0
    with pytest.warns(UserWarning, match=re.escape("trajectory 1 (particle 41) never moves")):
        latents = encode(model, io.Trajectories(still, data.labels))
    assert np.isfinite(latents["mu"]).all()  # a warning, not an error
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # moving trajectories: no warning
        encode(model, data)
    # In 2D: a track that moves along x only; a 1D model encoding axis by axis names the axis.
    flat = datasets.make_dataset("bm", D=(1e-2,), n_per_cell=3, n_positions=60, dim=2, seed=1)
    dx = flat.displacements.copy()
    dx[2, 1] = 0.0
    with pytest.warns(UserWarning, match=re.escape("trajectory 2 never moves along some axis")):
        encode(VAE(ModelConfig(dim=2)).eval(), io.Trajectories(dx))
    with pytest.warns(UserWarning, match=re.escape("trajectory 2 along y never moves")):
        encode_axes(model, io.Trajectories(dx))


def test_latents_that_are_not_finite_are_not_written(tmp_path):
    data = fbm()
    latents = encode(VAE(ModelConfig()).eval(), data)
    latents["logvar"][[0, 2], 1] = np.inf
    for name in ("l.npz", "l.csv"):
        with pytest.raises(
            EncodingError,
            match=re.escape(
                "'logvar' is not finite (NaN or infinity) for 2 trajectories: 0 "
                "(particle 40), 2 (particle 42)"
            ),
        ):
            save_latents(latents, data, tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    # encode_axes's combined latents are NaN where the axes disagree: written as such.
    tracks = datasets.make_dataset("bm", D=(1e-2,), n_per_cell=3, n_positions=60, dim=2, seed=1)
    both = encode_axes(VAE(ModelConfig()).eval(), tracks)
    both["axes_agree"][0] = False
    both["mu_combined"][0] = np.nan
    save_latents(both, tracks, tmp_path / "axes.csv")
    with open(tmp_path / "axes.csv") as handle:
        assert next(csv.DictReader(handle))["mu_combined_0"] == ""
    both["mu_combined"][1] = np.nan  # where they agree: refused
    with pytest.raises(EncodingError, match="'mu_combined' is not finite .* for 1 trajectory: 1"):
        save_latents(both, tracks, tmp_path / "axes.npz")


def test_the_encode_command_refuses_tracks_beyond_float32_naming_file_and_particle(tmp_path):
    save_model(VAE(ModelConfig(scale_equivariant=True)), tmp_path / "m")
    data = fbm()
    data.displacements[3] *= 1e19
    path = io.write_tracks(data, tmp_path / "tracks.csv")
    out = tmp_path / "latents.csv"
    result = CliRunner().invoke(app, ["encode", str(tmp_path / "m"), str(path), "-o", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert f"{path}: the displacements of trajectory 3 (particle 43) are too large" in (
        result.output
    )
