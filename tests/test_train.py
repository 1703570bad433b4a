"""Tests of minrep.train and minrep.encode: schedules, batching, the run directory, resume,
the non-finite-loss stop, data-parallel training, and encoding of variable-length tracks."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from minrep import io, processes, train
from minrep.checkpoint import load_model
from minrep.cli import app
from minrep.encode import EncodingError, encode
from minrep.model import VAE, ModelConfig

TWO_STAGES = train.Plan([train.Stage(1, 0.0), train.Stage(1, 1e-3, 1e-4, "constant")])


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    """144 FBM trajectories of 49 displacements: a training epoch takes well under a second."""
    return processes.make_dataset(
        "fbm", alpha=(0.5, 1.5), D=(1e-3, 1e-2), n_per_cell=36, n_positions=50, seed=3
    )


def train_command(path, run, *options):
    """``python -m minrep train PATH -o RUN OPTIONS...`` as a subprocess argument list."""
    return [sys.executable, "-m", "minrep", "train", str(path), "-o", str(run), *options]


def read_history(run_dir):
    with open(run_dir / "history.csv") as handle:
        return list(csv.DictReader(handle))


# -- schedules --------------------------------------------------------------------------------


def test_beta_schedules():
    assert train.Constant(3e-3)(7.5) == 3e-3
    ramp = train.LinearRamp(1e-4, 5e-3, 4)
    assert ramp(0) == 1e-4 and ramp(2) == pytest.approx(2.55e-3) and ramp(9) == 5e-3
    geometric = train.GeometricRamp(1e-4, 1e-2, 2)
    assert geometric(1) == pytest.approx(1e-3) and geometric(5) == pytest.approx(1e-2)
    for schedule in (ramp, geometric, train.Constant(0.5)):
        assert train.schedule_from_dict(train.schedule_to_dict(schedule)) == schedule
        values = [schedule(e) for e in np.linspace(0, 6, 50)]
        assert np.all(np.diff(values) >= 0)  # annealing only ever increases beta


def test_one_cycle_shape():
    peak = 1e-3
    assert train.one_cycle(0.0, peak) == pytest.approx((peak / 25, 0.95))
    assert train.one_cycle(0.25, peak) == pytest.approx((peak, 0.85))
    assert train.one_cycle(1.0, peak) == pytest.approx((peak / 1e5, 0.95))
    rates = [train.one_cycle(f, peak)[0] for f in np.linspace(0, 1, 101)]
    assert max(rates) == pytest.approx(peak) and np.argmax(rates) == 25


def test_plan_stages_and_presets():
    paper = train.PRESETS["paper"]
    assert paper.epochs == 144 and paper.stage_ends() == [64, 80, 96, 112, 128, 144]
    assert paper.at(10)["beta"] == 0 and paper.at(64.5)["beta"] == 1e-4
    assert paper.at(143.9)["beta"] == 4e-3
    assert paper.at(64.0)["lr"] == pytest.approx(1e-3 / 25)  # a new one-cycle per stage
    for name, plan in train.PRESETS.items():
        betas = [plan.at(e)["beta"] for e in np.linspace(0, plan.epochs - 1e-6, 400)]
        assert np.all(np.diff(betas) >= 0), name
        assert betas[0] == 0.0, name  # beta = 0 first, until the reconstruction converges
    assert train.Plan.from_dict(paper.to_dict()).to_dict() == paper.to_dict()
    with pytest.raises(ValueError, match="learning-rate policy"):
        train.Stage(1, 0.0, policy="cyclic")


def test_batches_cover_each_trajectory_once_per_epoch():
    data = torch.arange(103, dtype=torch.float32)[:, None, None]
    batches = train.Batches(data, 10, shuffle=True, seed=4)
    assert len(batches) == 11
    first = torch.cat([batches[i] for i in range(len(batches))]).flatten()
    assert sorted(first.tolist()) == list(range(103))
    batches.epoch = 1
    second = torch.cat([batches[i] for i in range(len(batches))]).flatten()
    assert sorted(second.tolist()) == list(range(103)) and not torch.equal(first, second)
    again = train.Batches(data, 10, shuffle=True, seed=4)
    assert torch.equal(torch.cat([again[i] for i in range(11)]).flatten(), first)
    ordered = train.Batches(data, 10, shuffle=False)
    assert torch.equal(torch.cat([ordered[i] for i in range(11)]).flatten(), data.flatten())


def test_split_is_seeded_and_disjoint():
    a_train, a_val = train.split(1000, 0.2, seed=1)
    b_train, b_val = train.split(1000, 0.2, seed=1)
    assert np.array_equal(a_val, b_val) and a_val.size == 200 and a_train.size == 800
    assert not set(a_train) & set(a_val)
    assert not np.array_equal(train.split(1000, 0.2, seed=2)[1], a_val)


# -- the run directory ------------------------------------------------------------------------


FAULTS_PROGRAM = """
import resource, sys, torch
from minrep import train
from minrep.model import VAE, ModelConfig
if sys.argv[1] == "keep":
    assert train.keep_freed_memory()
torch.set_num_threads(1)
torch.manual_seed(0)
model, x = VAE(ModelConfig()), 0.1 * torch.randn(64, 1, 399)
optimizer = torch.optim.Adam(model.parameters())
faults = []
for step in range(15):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    loss, _ = model.loss(x, 1e-3)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults[5:])[5])  # the median step after five warm-up steps
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_keep_freed_memory_stops_the_page_faults_of_each_step():
    faults = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", FAULTS_PROGRAM, mode],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for mode in ("default", "keep")
    }
    # The median training step at batch 64 after five warm-up steps: by default freed
    # activations go back to the kernel and are faulted in afresh (measured 1,145-6,159 page
    # faults over 6 runs); kept, the warm-up steps' memory is reused (measured 0-1).
    assert faults["keep"] * 20 < faults["default"]


def test_training_writes_the_run_directory(tiny, tmp_path):
    run = tmp_path / "run"
    result = train.train(tiny, run, plan=TWO_STAGES, batch_size=32, progress=False)
    history = read_history(run)
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert [float(r["beta"]) for r in history] == [0.0, 1e-3]
    kl = [float(history[-1][f"kl_{i}"]) for i in range(6)]
    assert float(history[-1]["val_kl"]) == pytest.approx(sum(kl), rel=1e-6)
    survivors = [i for i, v in enumerate(kl) if v > train.SURVIVAL_KL]
    assert history[-1]["surviving"] == " ".join(map(str, survivors))
    expected = processes.exact_nll(*_val_arrays(tiny), start=32).mean()
    assert float(history[0]["val_exact_nll"]) == pytest.approx(expected, rel=1e-9)
    for name in (
        "config.json",
        "model.safetensors",
        "checkpoints/last.ckpt",
        "figures/training.png",
        "stages/stage-1/model.safetensors",
        "stages/stage-2/config.json",
    ):
        assert (run / name).is_file(), name
    model = load_model(run)
    for a, b in zip(model.state_dict().values(), result.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert model.config.log_scale_mean == pytest.approx(
        float(
            np.log(
                np.sqrt(
                    (tiny.displacements[train.split(len(tiny), 0.2, 0)[0]] ** 2).mean(axis=(1, 2))
                )
            ).mean()
        ),
        rel=1e-5,
    )


def test_training_can_start_from_a_trained_model(tiny, tmp_path):
    first = train.train(tiny, tmp_path / "a", plan=TWO_STAGES, batch_size=32, progress=False)
    # A learning rate of 1e-12 leaves the weights where they started: the loaded model's.
    still = train.Plan([train.Stage(1, 4e-3, 1e-12, "constant")])
    second = train.train(
        tiny, tmp_path / "b", plan=still, init=tmp_path / "a", batch_size=32, progress=False
    )
    assert second.model.config == first.model.config
    pairs = zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True)
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    assert load_model(tmp_path / "b").config == first.model.config
    # The same from the command line, with the plan as JSON; a broken plan file is refused.
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(still.to_dict()))
    path = tmp_path / "tiny.npz"
    io.save_npz(tiny, path)
    runner = CliRunner()
    args = ["train", str(path), "--batch-size", "32", "--plan", str(plan_file)]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "c"), "--init", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert read_history(tmp_path / "c")[0]["beta"] == "0.004"
    plan_file.write_text("{}")
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "d")])
    assert result.exit_code == 2 and "not a training plan" in result.output


def _val_arrays(data):
    _, val = train.split(len(data), 0.2, 0)
    part = data.subset(val)
    return part.displacements, "fbm", part.alpha, part.D


def test_max_epochs_stops_early_and_resume_finishes_the_plan(tiny, tmp_path):
    run = tmp_path / "run"
    plan = train.Plan([train.Stage(3, 0.0)])
    train.train(tiny, run, plan=plan, batch_size=32, max_epochs=1, progress=False)
    before = read_history(run)
    assert len(before) == 1
    assert not (run / "model.safetensors").exists() or load_model(run)  # exported when done
    with pytest.raises(train.TrainingError, match="holds a run already"):
        train.train(tiny, run, plan=plan, batch_size=32, progress=False)
    train.train(tiny, run, resume=True, progress=False)
    after = read_history(run)
    assert [int(r["epoch"]) for r in after] == [1, 2, 3]
    assert after[0] == before[0]  # epoch 1 was not trained again
    # The schedule continues where it stopped: the same beta and learning rates as a run
    # that was never interrupted.
    straight = tmp_path / "straight"
    train.train(tiny, straight, plan=plan, batch_size=32, progress=False)
    for column in ("stage", "beta", "lr"):
        assert [r[column] for r in after] == [r[column] for r in read_history(straight)]
    other = processes.make_dataset(
        "fbm", alpha=(0.5,), D=(1e-3,), n_per_cell=144, n_positions=50, seed=9
    )
    with pytest.raises(train.TrainingError, match="not the data of"):
        train.train(other.subset(np.arange(100)), run, resume=True, progress=False)
    with pytest.raises(train.TrainingError, match="nothing to resume"):
        train.train(tiny, tmp_path / "other", resume=True, progress=False)


@pytest.mark.slow
def test_a_killed_run_resumes_losing_at_most_one_epoch(tmp_path):
    data = processes.make_dataset(
        "fbm", alpha=(0.5, 1.5), D=(1e-3,), n_per_cell=400, n_positions=60, seed=5
    )
    path = io.save_npz(data, tmp_path / "data.npz")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = train_command(
        path, run, "--batch-size", "32", "--preset", "quick", "--max-epochs", "30"
    )
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (
        (run / "history.csv").exists() and len(read_history(run)) >= 2
    ):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = read_history(run)
    done = len(before)
    assert done >= 2
    train.train(data, run, resume=True, max_epochs=done + 2, progress=False)
    after = read_history(run)
    epochs = [int(r["epoch"]) for r in after]
    assert epochs == list(range(1, done + 3))
    # The checkpoint replaces the last one after the history row is written: at most the
    # epoch in flight at the kill is trained again; every earlier row is untouched.
    assert after[: done - 1] == before[: done - 1]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    run = tmp_path / "run"
    calls = {"n": 0}
    original = VAE.loss
    batches_per_epoch = int(np.ceil(len(train.split(len(tiny), 0.2, 0)[0]) / 32))

    def loss(self, x, beta):
        calls["n"] += 1
        value, terms = original(self, x, beta)
        if calls["n"] == batches_per_epoch + 3:  # third batch of the second epoch
            value = value * float("nan")
        return value, terms

    monkeypatch.setattr(VAE, "loss", loss)
    with pytest.raises(train.TrainingError, match=r"non-finite loss .* epoch 2, batch 3"):
        train.train(
            tiny, run, plan=train.Plan([train.Stage(3, 0.0)]), batch_size=32, progress=False
        )
    before = read_history(run)
    assert len(before) == 1
    assert not (run / "model.safetensors").exists()  # no untrained model left to load
    monkeypatch.setattr(VAE, "loss", original)
    train.train(tiny, run, resume=True, progress=False)  # the last good state resumes
    after = read_history(run)
    assert [int(r["epoch"]) for r in after] == [1, 2, 3] and after[0] == before[0]


def test_bad_training_input_is_refused_before_training(tiny, tmp_path):
    ragged = io.Trajectories(np.ones((20, 1, 60)), lengths=np.r_[np.full(10, 60), np.full(10, 50)])
    with pytest.raises(train.TrainingError, match="one length"):
        train.train(ragged, tmp_path / "a", progress=False)
    short = processes.make_dataset("bm", n_per_cell=2, n_positions=30)
    with pytest.raises(io.TrajectoryFileError, match="minimum of 33 displacements"):
        train.train(short, tmp_path / "b", progress=False)
    with pytest.raises(train.TrainingError, match="dim 1, the model expects 2"):
        train.train(tiny, tmp_path / "c", model_config=ModelConfig(dim=2), progress=False)
    not_a_dataset = tmp_path / "x.npz"
    not_a_dataset.write_text("hello")
    result = CliRunner().invoke(app, ["train", str(not_a_dataset), "-o", str(tmp_path / "d")])
    assert result.exit_code == 2 and "not an .npz dataset" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()


@pytest.mark.slow
def test_data_parallel_training_on_two_cpu_processes(tiny, tmp_path):
    path = io.save_npz(tiny, tmp_path / "tiny.npz")
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        train_command(
            path,
            run,
            "--accelerator",
            "cpu",
            "--devices",
            "2",
            "--max-epochs",
            "2",
            "--batch-size",
            "16",
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model = load_model(run)
    history = read_history(run)
    assert [int(r["epoch"]) for r in history] == [1, 2]
    # 115 training trajectories in batches of 16: 8 batches, 4 per process. The learning
    # rate of each epoch's last step is the plan's at 3/4 of the epoch (not 7/8).
    plan = train.PRESETS["quick"]
    for row in history:
        expected = plan.at(int(row["epoch"]) - 1 + 3 / 4)["lr"]
        assert float(row["lr"]) == pytest.approx(expected, rel=1e-9)
    mu, _ = model.encode(torch.from_numpy(tiny.displacements[:4]))
    assert torch.isfinite(mu).all()


def test_learning_rate_finder(tiny, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(io.save_npz(tiny, tmp_path / "t.npz")),
            "-o",
            str(tmp_path / "lr"),
            "--find-lr",
            "--batch-size",
            "16",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "suggested learning rate" in result.output
    assert (tmp_path / "lr" / "figures" / "lr_find.png").is_file()


# -- encoding ---------------------------------------------------------------------------------


def test_encode_variable_length_tracks(tmp_path):
    model = VAE(ModelConfig(dim=2)).eval()
    run = tmp_path / "model"
    from minrep.checkpoint import save_model

    save_model(model, run)
    parts = [
        processes.make_dataset(
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
        encode(model, processes.make_dataset("bm", n_per_cell=1, n_positions=50))


def test_encode_refuses_short_tracks_unless_skipped(tmp_path):
    from minrep.checkpoint import save_model

    save_model(VAE(ModelConfig()), tmp_path / "m")
    data = io.Trajectories(np.ones((2, 1, 60), np.float32), lengths=[60, 20])
    csv_path = io.write_tracks(data, tmp_path / "t.csv")
    result = CliRunner().invoke(
        app, ["encode", str(tmp_path / "m"), str(csv_path), "-o", str(tmp_path / "l.csv")]
    )
    assert result.exit_code == 2 and "minimum of 33 displacements" in result.output
    result = CliRunner().invoke(
        app,
        [
            "encode",
            str(tmp_path / "m"),
            str(csv_path),
            "-o",
            str(tmp_path / "l.csv"),
            "--skip-short",
        ],
    )
    assert result.exit_code == 0 and "1 trajectories encoded" in result.output
