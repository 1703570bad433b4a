"""Tests of minrep.encode and ``minrep encode``: latents of variable-length tracks, each as it
would be encoded alone, and short tracks refused unless skipped."""

import csv

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from minrep import datasets, io
from minrep.checkpoint import save_model
from minrep.cli import app
from minrep.encode import EncodingError, encode
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
