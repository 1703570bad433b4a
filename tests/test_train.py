"""Tests of minrep.train: the training configuration, batching, the run directory (history,
training range, progress), resume (also of runs written before TrainConfig), the
non-finite-loss stop, data-parallel training and the learning-rate finder."""

import csv
import dataclasses
import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from typer.testing import CliRunner

from minrep import datasets, io, processes, train
from minrep.checkpoint import PRETRAINED, load_model, read_config
from minrep.cli import app
from minrep.dimension import EffectiveDimension, effective_dimension
from minrep.encode import EncodingError
from minrep.model import SURVIVAL_KL, VAE, ModelConfig
from minrep.schedule import PRESETS, Plan, Stage
from minrep.train import TrainConfig, TrainingError

TWO_STAGES = Plan([Stage(1, 0.0), Stage(1, 1e-3, 1e-4, "constant")])


def config(**values) -> TrainConfig:
    """A training configuration for the tiny set: batches of 32."""
    return TrainConfig(**{"batch_size": 32, **values})


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    """144 FBM trajectories of 49 displacements: a training epoch takes well under a second."""
    return datasets.make_dataset(
        "fbm", alpha=(0.5, 1.5), D=(1e-3, 1e-2), n_per_cell=36, n_positions=50, seed=3
    )


def train_command(path, run, *options):
    """``python -m minrep train PATH -o RUN OPTIONS...`` as a subprocess argument list."""
    return [sys.executable, "-m", "minrep", "train", str(path), "-o", str(run), *options]


def read_history(run_dir):
    with open(run_dir / "history.csv") as handle:
        return list(csv.DictReader(handle))


def recorded(run_dir) -> TrainConfig:
    """The training configuration a run directory's config.json records."""
    return TrainConfig.from_dict(read_config(run_dir)["training"])


# -- the training configuration -----------------------------------------------------------


def test_train_config_json_round_trip_and_clear_errors():
    plan = Plan([Stage(2, 0.0), Stage(1, 1e-3, 2e-4, "constant")])
    given = TrainConfig(plan=plan, batch_size=64, seed=3, max_epochs=2, devices="auto")
    assert TrainConfig.from_dict(json.loads(json.dumps(given.to_dict()))) == given
    assert TrainConfig.from_dict({}) == TrainConfig()  # missing keys take their defaults
    with pytest.raises(TrainingError, match="unknown training configuration keys: batchsize"):
        TrainConfig.from_dict({"batchsize": 64})
    with pytest.raises(TrainingError, match="batch_size must be an integer >= 1, got '64'"):
        TrainConfig.from_dict({"batch_size": "64"})
    with pytest.raises(TrainingError, match="val_fraction must be a number between 0 and 1"):
        TrainConfig(val_fraction=1.0)
    with pytest.raises(TrainingError, match="max_epochs must be an integer >= 1 or null"):
        TrainConfig(max_epochs=0)
    with pytest.raises(TrainingError, match="unknown preset 'fast'"):
        TrainConfig(preset="fast")
    with pytest.raises(TrainingError, match="plan is not a plan"):
        TrainConfig.from_dict({"plan": {"stages": [{"epochs": 1, "bta": 0.0}]}})


def test_resolved_config_spells_out_the_plan():
    quick = TrainConfig().resolved()
    assert quick.plan == PRESETS["quick"] and quick.preset == "quick"
    assert quick.resolved() == quick
    faster = TrainConfig(lr=2e-3).resolved()  # the learning rate is folded into the plan
    assert faster.lr is None and faster.preset is None
    assert [s.lr for s in faster.plan.stages] == pytest.approx(
        [2 * s.lr for s in PRESETS["quick"].stages]
    )
    assert faster.resolved() == faster  # and not applied twice
    custom = TrainConfig(plan=TWO_STAGES).resolved()
    assert custom.plan == TWO_STAGES and custom.preset is None


@pytest.mark.parametrize("name", sorted(p.name for p in PRETRAINED.iterdir() if p.is_dir()))
def test_shipped_models_training_sections_load(name):
    section = read_config(name)["training"]
    config = TrainConfig.from_dict(section)
    assert config.plan == Plan.from_dict(section["plan"]) and config.seed == section["seed"]
    assert config.resolved().plan == config.plan  # what a resume would follow


def test_training_range_of_the_labels(tiny):
    assert train.training_range(tiny) == {"alpha": [0.5, 1.5], "D": [1e-3, 1e-2]}
    bm = datasets.make_dataset("bm", D=(1e-4, 1e-3), n_per_cell=2, n_positions=40)
    assert train.training_range(bm) == {"alpha": [1.0, 1.0], "D": [1e-4, 1e-3]}
    no_alpha = io.Trajectories(bm.displacements, {"D": bm.D}, {"process": "bm"})
    assert train.training_range(no_alpha)["alpha"] == [1.0, 1.0]  # Brownian: alpha = 1
    assert train.training_range(io.Trajectories(bm.displacements)) is None
    fbm_without_alpha = io.Trajectories(tiny.displacements, {"D": tiny.D}, {"process": "fbm"})
    assert train.training_range(fbm_without_alpha) is None


# -- batching ---------------------------------------------------------------------------------


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


def test_cropped_batches_are_seeded_prefixes_from_the_shortest_to_the_whole():
    data = torch.arange(64 * 400, dtype=torch.float32).view(64, 1, 400)
    batches = train.Batches(data, 1, shuffle=True, seed=2, crop_min_steps=10)
    lengths = []
    for epoch in range(10):
        batches.epoch = epoch
        for i in range(len(batches)):
            batch = batches[i]
            row = int(batch[0, 0, 0]) // 400
            torch.testing.assert_close(batch, data[row : row + 1, :, : batch.shape[-1]])
            lengths.append(batch.shape[-1])
    lengths = np.array(lengths)
    assert lengths.min() >= 10 and lengths.max() == 400
    # Half whole (640 draws: a binomial spread of 20), the rest log-uniform on [10, 400]:
    # a median of sqrt(10 * 400) = 63 and a quarter under 10 * 40 ** 0.25 = 25.
    assert abs((lengths == 400).sum() - 320) < 60
    short = lengths[lengths < 400]
    assert 45 < np.median(short) < 90 and 0.17 < (short < 25).mean() < 0.33
    again = train.Batches(data, 1, shuffle=True, seed=2, crop_min_steps=10)
    again.epoch = 9
    assert [again[i].shape[-1] for i in range(64)] == list(lengths[-64:])


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
    # faults over 6 runs); kept, the warm-up steps' memory is reused (measured 0-1). Some
    # machines (CI once measured 0 by default) already keep it: nothing to stop there.
    if faults["default"] < 100:
        pytest.skip(f"this allocator already reuses freed memory ({faults['default']} faults)")
    assert faults["keep"] * 20 < faults["default"]


def test_training_writes_the_run_directory(tiny, tmp_path):
    run = tmp_path / "run"
    result = train.train(tiny, run, config(plan=TWO_STAGES), progress=False)
    history = read_history(run)
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert [float(r["beta"]) for r in history] == [0.0, 1e-3]
    kl = [float(history[-1][f"kl_{i}"]) for i in range(6)]
    assert float(history[-1]["val_kl"]) == pytest.approx(sum(kl), rel=1e-6)
    survivors = [i for i, v in enumerate(kl) if v > SURVIVAL_KL]
    assert history[-1]["surviving"] == " ".join(map(str, survivors))
    # The effective dimension of every epoch, from the moments summed over the validation
    # batches: the last equals that of the final model's held-out posteriors, computed directly.
    assert all(r["effective_dimension"].isdigit() for r in history)
    displacements = torch.from_numpy(_val_arrays(tiny)[0])
    with torch.no_grad():
        out = result.model(displacements, sample=False)
    direct = effective_dimension(out["mu"].numpy(), out["logvar"].numpy(), survivors)
    assert int(history[-1]["effective_dimension"]) == direct.dimension
    assert result.dimension.snr == pytest.approx(direct.snr, rel=1e-4, abs=1e-6)
    assert history[-1]["redundant"] == " ".join(map(str, direct.redundant_latents))
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
    # One mode for every file, that of an ordinary write (safetensors' own was 0600).
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {p.relative_to(run): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*")}
    assert {m for p, m in modes.items() if (run / p).is_file()} == {0o666 & ~umask}, modes
    # Epochs' own durations and the time since the run began; the latter includes setup.
    epoch_seconds = [float(r["epoch_seconds"]) for r in history]
    elapsed = [float(r["elapsed_seconds"]) for r in history]
    assert "seconds" not in history[0] and min(epoch_seconds) > 0
    assert elapsed[0] >= epoch_seconds[0] and elapsed[1] - elapsed[0] >= epoch_seconds[1]
    # config.json: the training settings as run, and the data's label range.
    assert recorded(run) == config(plan=TWO_STAGES, preset=None)
    grid = {"alpha": [0.5, 1.5], "D": [1e-3, 1e-2]}
    assert read_config(run)["data"]["training_range"] == grid
    model = load_model(run)
    assert model.training_range == grid and result.model.training_range == grid
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


def test_training_can_start_from_a_trained_model(tiny, tmp_path, monkeypatch):
    allocator_calls = []
    monkeypatch.setattr(train, "keep_freed_memory", lambda: allocator_calls.append(1) or True)
    first = train.train(tiny, tmp_path / "a", config(plan=TWO_STAGES), progress=False)
    # A learning rate of 1e-12 leaves the weights where they started: the loaded model's.
    still = Plan([Stage(1, 4e-3, 1e-12, "constant")])
    second = train.train(
        tiny, tmp_path / "b", config(plan=still, init=tmp_path / "a"), progress=False
    )
    assert not allocator_calls  # the library leaves the process's allocator alone
    assert recorded(tmp_path / "b").init == str(tmp_path / "a")
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
    assert allocator_calls == [1]  # the command sets it, once
    plan_file.write_text("{}")
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "d")])
    assert result.exit_code == 2 and "not a training plan" in result.output


def _val_arrays(data):
    _, val = train.split(len(data), 0.2, 0)
    part = data.subset(val)
    return part.displacements, "fbm", part.alpha, part.D


def test_max_epochs_stops_early_and_resume_finishes_the_plan(tiny, tmp_path):
    run = tmp_path / "run"
    plan = Plan([Stage(3, 0.0)])
    train.train(tiny, run, config(plan=plan, max_epochs=1), progress=False)
    before = read_history(run)
    assert len(before) == 1
    assert not (run / "model.safetensors").exists() or load_model(run)  # exported when done
    with pytest.raises(TrainingError, match="holds a run already"):
        train.train(tiny, run, config(plan=plan), progress=False)
    train.train(tiny, run, resume=True, progress=False)
    after = read_history(run)
    assert [int(r["epoch"]) for r in after] == [1, 2, 3]
    assert after[0] == before[0]  # epoch 1 was not trained again
    # The schedule continues where it stopped: the same beta and learning rates as a run
    # that was never interrupted.
    straight = tmp_path / "straight"
    train.train(tiny, straight, config(plan=plan), progress=False)
    for column in ("stage", "beta", "lr"):
        assert [r[column] for r in after] == [r[column] for r in read_history(straight)]
    other = datasets.make_dataset(
        "fbm", alpha=(0.5,), D=(1e-3,), n_per_cell=144, n_positions=50, seed=9
    )
    with pytest.raises(TrainingError, match="not the data of"):
        train.train(other.subset(np.arange(100)), run, resume=True, progress=False)
    with pytest.raises(TrainingError, match="nothing to resume"):
        train.train(tiny, tmp_path / "other", resume=True, progress=False)


def test_each_history_row_has_its_own_epochs_training_loss(tiny, tmp_path, monkeypatch):
    losses = []  # (loss, batch size) of every training step, in order
    original = VAE.loss

    def loss(self, x, beta, *args, **kwargs):
        value, terms = original(self, x, beta, *args, **kwargs)
        losses.append((value.item(), len(x)))
        return value, terms

    monkeypatch.setattr(VAE, "loss", loss)
    run = tmp_path / "run"
    train.train(tiny, run, config(plan=Plan([Stage(3, 0.0)]), max_epochs=1), progress=False)
    train.train(tiny, run, resume=True, progress=False)  # epochs 2 and 3
    per_epoch = int(np.ceil(len(train.split(len(tiny), 0.2, 0)[0]) / 32))
    assert len(losses) == 3 * per_epoch
    for row in read_history(run):
        steps = losses[(int(row["epoch"]) - 1) * per_epoch : int(row["epoch"]) * per_epoch]
        mean = sum(v * n for v, n in steps) / sum(n for _, n in steps)
        # The first epoch too (it was NaN), and the first after the resume (it was the
        # previous epoch's).
        assert float(row["train_loss"]) == pytest.approx(mean, rel=1e-5), row["epoch"]


def test_a_run_begun_before_train_config_resumes(tiny, tmp_path):
    """config.json as the shipped models have it (no hardware keys, no training range) and
    history rows with ``seconds``: resumed, the run records today's keys and columns."""
    run = tmp_path / "run"
    train.train(tiny, run, config(plan=Plan([Stage(2, 0.0)]), max_epochs=1), progress=False)
    document = read_config(run)
    old_keys = ("plan", "preset", "batch_size", "val_fraction", "seed", "max_epochs")
    document["training"] = {k: document["training"][k] for k in old_keys}
    del document["data"]["training_range"]
    (run / "config.json").write_text(json.dumps(document))
    path = run / "checkpoints" / "last.ckpt"
    state = torch.load(path, weights_only=False)
    [rows] = [v["rows"] for k, v in state["callbacks"].items() if "RunDirectory" in k]
    for row in rows:
        row["seconds"] = row.pop("elapsed_seconds") + 100.0  # an earlier part of the run
        del row["epoch_seconds"], row["effective_dimension"], row["redundant"]
    torch.save(state, path)
    train.train(tiny, run, resume=True, progress=False)
    history = read_history(run)
    assert [int(r["epoch"]) for r in history] == [1, 2] and "seconds" not in history[0]
    assert float(history[0]["epoch_seconds"]) == float(history[0]["elapsed_seconds"]) > 100
    # Not measured before: NaN; measured after the resume.
    assert history[0]["effective_dimension"] == "nan" and history[1]["effective_dimension"]
    columns = list(history[0])
    assert columns.index("effective_dimension") == columns.index("n_surviving") + 1
    assert (
        float(history[1]["elapsed_seconds"])
        > float(history[0]["elapsed_seconds"]) + float(history[1]["epoch_seconds"]) - 1e-9
    )
    assert recorded(run) == config(plan=Plan([Stage(2, 0.0)]), preset=None)
    assert load_model(run).training_range == {"alpha": [0.5, 1.5], "D": [1e-3, 1e-2]}


def test_the_closing_lines_of_training_say_when_latents_are_redundant(tmp_path, capsys):
    from minrep.cli import _report_training

    row = {"epoch": 9, "val_nll": -2.5, "val_exact_nll": -2.501, "surviving": "0 1 5"}
    redundant = EffectiveDimension(
        dimension=2,
        snr=[150.0, 40.0, 2.0],
        signal=[3.0, 0.8, 0.04],
        noise=[0.02] * 3,
        surviving=[0, 1, 5],
        redundant=[[0, 1]],
    )
    result = train.TrainResult(tmp_path, None, [{**row, "effective_dimension": 2}], True, redundant)
    _report_training(result, tmp_path, find_lr=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"surviving latents [0 1 5], effective dimension 2 -> {tmp_path}")
    assert lines[1].startswith(
        "3 latents carry information; they span 2 dimensions: latents 0 and 1 are redundant; "
        "a last stage that collapses the copies removes it (the presets' stage 11"
    )
    minimal = EffectiveDimension(2, [150.0, 40.0], [3.0, 0.8], [0.02] * 2, surviving=[0, 5])
    row = {**row, "surviving": "0 5", "effective_dimension": 2}
    _report_training(train.TrainResult(tmp_path, None, [row], True, minimal), tmp_path, False)
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_progress_counts_epochs_from_one(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "interactive", lambda: False)  # stderr to a file or a pipe
    train.train(tiny, tmp_path / "lines", config(plan=TWO_STAGES), progress=True)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    history = read_history(tmp_path / "lines")
    assert len(lines) == 2 and "\r" not in err  # one line per epoch, no bar
    for line, row in zip(lines, history, strict=True):
        assert line.startswith(f"epoch {row['epoch']}/2 (stage {row['stage']}, beta ")
        assert f"held-out NLL {float(row['val_nll']):.4f}" in line
        assert f"{row['n_surviving']} surviving latents [{row['surviving']}]" in line
        assert line.endswith(f", {float(row['epoch_seconds']):.1f} s")
    monkeypatch.setattr(train, "interactive", lambda: True)  # a terminal: Lightning's bar
    train.train(tiny, tmp_path / "bar", config(plan=TWO_STAGES), progress=True)
    bar = capsys.readouterr().out
    assert "Epoch 1/2" in bar and "Epoch 2/2" in bar and "Epoch 0" not in bar


@pytest.mark.slow
def test_a_killed_run_resumes_losing_at_most_one_epoch(tmp_path):
    data = datasets.make_dataset(
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
    train.train(data, run, TrainConfig(max_epochs=done + 2), resume=True, progress=False)
    after = read_history(run)
    epochs = [int(r["epoch"]) for r in after]
    assert epochs == list(range(1, done + 3))
    # The checkpoint replaces the last one after the history row is written: at most the
    # epoch in flight at the kill is trained again; every earlier row is untouched.
    assert after[: done - 1] == before[: done - 1]


def test_sigterm_and_sigint_stop_training_non_zero_and_resume_goes_on(tiny, tmp_path):
    """What a batch scheduler (SIGTERM) or Ctrl+C (SIGINT) does to a training: it stops after
    the batch in flight with 128 + the signal (it exited 0 on SIGTERM, without a model), one
    line saying how to resume, the last finished epoch's checkpoint kept and no final model;
    --resume goes on from there. ``minrep train``, both runs at once, each in its own
    process."""
    path = io.save_npz(tiny, tmp_path / "tiny.npz")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs, processes_ = {}, {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        runs[signum] = tmp_path / signum.name
        processes_[signum] = subprocess.Popen(
            train_command(path, runs[signum], "--batch-size", "32"),  # quick: 28 epochs
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    deadline = time.time() + 120
    waiting = set(processes_)
    while waiting and time.time() < deadline:
        for signum in list(waiting):
            # The first epoch's checkpoint is there: signal in the middle of the next.
            if (runs[signum] / "checkpoints" / "last.ckpt").exists():
                processes_[signum].send_signal(signum)
                waiting.discard(signum)
        time.sleep(0.05)
    for signum, process in processes_.items():
        _, err = process.communicate(timeout=120)
        run = runs[signum]
        assert process.returncode == 128 + signum, err[-3000:]  # 143 and 130
        done = len(read_history(run))
        assert 1 <= done < PRESETS["quick"].epochs
        assert err.strip().splitlines()[-1] == (
            f"error: training stopped by {signum.name} after epoch {done} (any epoch in "
            f"progress is dropped; {run / 'checkpoints' / 'last.ckpt'} is kept); continue "
            f"with: minrep train {path} -o {run} --resume"
        )
        assert not (run / "model.safetensors").exists()  # nothing claims to be final
        state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
        assert state["epoch"] + 1 == done  # the checkpoint holds the last history row
        assert not list(run.rglob("*.tmp"))
        before = read_history(run)
        result = train.train(path, run, TrainConfig(max_epochs=done + 1), resume=True)
        after = read_history(run)
        assert [int(r["epoch"]) for r in after] == list(range(1, done + 2))
        assert after[:done] == before  # resumed where it stopped
        assert (run / "model.safetensors").is_file() and result.history[-1]["epoch"] == done + 1


class SignalSelf(Callback):
    """Sends this process ``signals`` at the end of batch ``batch`` of epoch ``epoch`` (from
    1), or in ``on_fit_start`` (while Lightning sets up) when ``epoch`` is 0; counts the
    training batches that end after that."""

    def __init__(self, signals, epoch, batch=0):
        self.signals, self.epoch, self.batch = signals, epoch, batch
        self.batches_after = 0  # training batches that ended after the signal

    def _send(self):
        for signum in self.signals:
            os.kill(os.getpid(), signum)

    def on_fit_start(self, trainer, module):
        if self.epoch == 0:
            self._send()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.signals and (trainer.current_epoch + 1, batch_idx) == (self.epoch, self.batch):
            self._send()
        elif self.signals and trainer.current_epoch + 1 >= self.epoch:
            self.batches_after += 1


@pytest.mark.parametrize(
    ("signals", "epoch", "done"),
    [
        ([signal.SIGINT], 2, 1),  # in the middle of epoch 2: epoch 1 kept
        ([signal.SIGTERM], 0, 0),  # while Lightning sets up (it clears its flag then)
        ([signal.SIGTERM, signal.SIGTERM], 3, 2),  # twice: at once
    ],
    ids=["sigint-mid-epoch", "sigterm-in-setup", "sigterm-twice"],
)
def test_a_signal_in_process_stops_after_the_batch_in_flight(
    tiny, tmp_path, monkeypatch, signals, epoch, done
):
    sender = SignalSelf(signals, epoch)
    monkeypatch.setattr(train, "_progress_callbacks", lambda *args: [sender])
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    run = tmp_path / "run"
    with pytest.raises(train.TrainingInterrupted) as stopped:
        train.train(tiny, run, config(plan=Plan([Stage(5, 0.0)])), progress=False)
    assert stopped.value.signum == signals[0] and stopped.value.exit_code == 128 + signals[0]
    # Not one more batch; from the set-up, the first batch (the flag is read after a batch).
    assert sender.batches_after == (1 if epoch == 0 else 0)
    assert {s: signal.getsignal(s) for s in before} == before  # the handlers are restored
    assert not (run / "model.safetensors").exists()
    if done:
        assert stopped.value.resumable and f"after epoch {done} " in str(stopped.value)
        assert len(read_history(run)) == done
        assert (
            torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == done - 1
        )
    else:
        assert not stopped.value.resumable and not (run / "checkpoints" / "last.ckpt").exists()
        assert str(stopped.value) == (
            f"training stopped by SIGTERM before its first epoch ended: nothing to resume; "
            f"start again with: minrep train DATA -o {run}"
        )
    monkeypatch.setattr(train, "_progress_callbacks", lambda *args: [])
    if done:
        train.train(tiny, run, resume=True, progress=False)
    else:
        train.train(tiny, run, config(plan=Plan([Stage(5, 0.0)])), progress=False)
    assert [int(r["epoch"]) for r in read_history(run)] == [1, 2, 3, 4, 5]
    assert (run / "model.safetensors").is_file()


@pytest.mark.parametrize("every_step", [True, False], ids=["checked-each-step", "at-epoch-end"])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tiny, tmp_path, monkeypatch, every_step
):
    # On a GPU the check waits for the end of the epoch (no device sync per step).
    monkeypatch.setattr(train.MinrepModule, "check_every_step", every_step)
    run = tmp_path / "run"
    calls = {"n": 0}
    original = VAE.loss
    batches_per_epoch = int(np.ceil(len(train.split(len(tiny), 0.2, 0)[0]) / 32))

    def loss(self, x, beta, *args, **kwargs):
        calls["n"] += 1
        value, terms = original(self, x, beta, *args, **kwargs)
        if calls["n"] == batches_per_epoch + 3:  # third batch of the second epoch
            value = value * float("nan")
        return value, terms

    monkeypatch.setattr(VAE, "loss", loss)
    with pytest.raises(TrainingError, match=r"non-finite loss .* epoch 2, batch 3"):
        train.train(tiny, run, config(plan=Plan([Stage(3, 0.0)])), progress=False)
    before = read_history(run)
    assert len(before) == 1
    assert not (run / "model.safetensors").exists()  # no untrained model left to load
    monkeypatch.setattr(VAE, "loss", original)
    train.train(tiny, run, resume=True, progress=False)  # the last good state resumes
    after = read_history(run)
    assert [int(r["epoch"]) for r in after] == [1, 2, 3] and after[0] == before[0]


def test_the_gradient_graphs_manual_optimisation_trains_as_lightnings_own(
    tiny, tmp_path, monkeypatch
):
    """The GPU's path (GradientGraph, the module stepping Adam) run eagerly on the CPU gives
    the weights of Lightning's automatic optimisation: the same plan (learning rate, momentum,
    beta, decorrelation, a branch that resets Adam), random numbers and last smaller batch,
    and the gradients survive Lightning's zero_grad before each validation (which, unseen,
    had left Adam with nothing to step after the first epoch on a GPU)."""
    plan = Plan([Stage(1, 0.0), Stage(1, 1e-3, decorrelation=0.1), Stage(1, 1e-3, start_from=1)])
    results = {}
    for graph in (False, True):
        monkeypatch.setattr(train.MinrepModule, "uses_cuda_graph", lambda self, g=graph: g)
        results[graph] = train.train(tiny, tmp_path / str(graph), config(plan=plan), progress=False)
    losses = [[r["train_loss"] for r in results[g].history] for g in (False, True)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert results[True].history[2]["note"] == "started from stage 1's weights"
    automatic = results[False].model.state_dict()
    for name, value in results[True].model.state_dict().items():
        torch.testing.assert_close(value, automatic[name], rtol=1e-5, atol=1e-6, msg=name)


def test_bad_training_input_is_refused_before_training(tiny, tmp_path):
    ragged = io.Trajectories(np.ones((20, 1, 60)), lengths=np.r_[np.full(10, 60), np.full(10, 50)])
    with pytest.raises(TrainingError, match="one length"):
        train.train(ragged, tmp_path / "a", progress=False)
    short = datasets.make_dataset("bm", n_per_cell=2, n_positions=30)
    with pytest.raises(io.TrajectoryFileError, match="minimum of 33 displacements"):
        train.train(short, tmp_path / "b", progress=False)
    with pytest.raises(TrainingError, match="dim 1, the model expects 2"):
        train.train(tiny, tmp_path / "c", model_config=ModelConfig(dim=2), progress=False)
    huge = io.Trajectories(tiny.displacements * np.float32(1e20), tiny.labels, tiny.meta)
    with pytest.raises(EncodingError, match=r"huge.npz: the displacements of 144 trajectories"):
        train.train(huge, tmp_path / "e", progress=False, source="huge.npz")
    not_a_dataset = tmp_path / "x.npz"
    not_a_dataset.write_text("hello")
    result = CliRunner().invoke(app, ["train", str(not_a_dataset), "-o", str(tmp_path / "d")])
    assert result.exit_code == 2 and "not an .npz dataset" in result.output
    for name in ("a", "d", "e"):
        assert not (tmp_path / name).exists(), name


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
    plan = PRESETS["quick"]
    for row in history:
        expected = plan.at(int(row["epoch"]) - 1 + 3 / 4)["lr"]
        assert float(row["lr"]) == pytest.approx(expected, rel=1e-9)
    mu, _ = model.encode(torch.from_numpy(tiny.displacements[:4]))
    assert torch.isfinite(mu).all()
    # The moments of the two processes' halves of the validation set, summed: the effective
    # dimension of the whole set.
    with torch.no_grad():
        out = model(torch.from_numpy(_val_arrays(tiny)[0]), sample=False)
    survivors = [int(i) for i in history[-1]["surviving"].split()]
    direct = effective_dimension(out["mu"].numpy(), out["logvar"].numpy(), survivors)
    assert int(history[-1]["effective_dimension"]) == direct.dimension


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


def test_a_proposal_stage_keeps_the_weights_with_the_lower_held_out_loss(
    tiny, tmp_path, monkeypatch
):
    # The weights are wrecked as stage 2 begins (noise of sd 0.1 on every weight) and stage 2,
    # a proposal against stage 1 at the same beta, cannot repair them in one epoch at a tiny
    # rate: stage 1's weights come back, and the last row describes them.
    wrecked = Plan([Stage(2, 1e-3), Stage(1, 1e-3, 1e-6, "constant", compare_with=1)])
    start_epoch = train.MinrepModule.on_train_epoch_start

    def wreck(module):
        start_epoch(module)
        if module.current_epoch == 2:
            with torch.no_grad():
                for weights in module.model.parameters():
                    weights.add_(0.1 * torch.randn_like(weights))

    monkeypatch.setattr(train.MinrepModule, "on_train_epoch_start", wreck)
    run = tmp_path / "wrecked"
    result = train.train(tiny, run, config(plan=wrecked), progress=False)
    history = read_history(run)
    stage_one, last = history[1], history[-1]
    assert len(history) == 3
    assert "stage 1's weights restored" in last["note"]
    assert float(last["val_loss"]) == pytest.approx(float(stage_one["val_loss"]), abs=1e-6)
    assert last["surviving"] == stage_one["surviving"]
    final, saved = load_model(run).state_dict(), load_model(run / "stages" / "stage-1").state_dict()
    for name, weights in saved.items():
        torch.testing.assert_close(final[name], weights, rtol=0, atol=0)
    assert result.dimension.dimension == int(last["effective_dimension"])
    # A proposal that does better is kept.
    monkeypatch.setattr(train.MinrepModule, "on_train_epoch_start", start_epoch)
    better = Plan([Stage(1, 1e-3, 1e-4), Stage(2, 1e-3, compare_with=1)])
    run = tmp_path / "better"
    train.train(tiny, run, config(plan=better), progress=False)
    history = read_history(run)
    assert float(history[-1]["val_loss"]) < float(history[0]["val_loss"])
    assert history[-1]["note"].endswith(": kept") and history[0]["note"] == ""


def test_a_branch_starts_from_an_earlier_stages_weights(tiny, tmp_path):
    # Stage 3 starts from stage 1's weights and hardly moves (a tiny constant rate): its final
    # weights are stage 1's, not stage 2's.
    plan = Plan([Stage(1, 1e-3), Stage(1, 1e-3), Stage(1, 1e-3, 1e-12, "constant", start_from=1)])
    run = tmp_path / "branch"
    train.train(tiny, run, config(plan=plan), progress=False)
    history = read_history(run)
    assert history[2]["note"] == "started from stage 1's weights" and history[1]["note"] == ""
    final = load_model(run).state_dict()
    one, two = (load_model(run / "stages" / f"stage-{k}").state_dict() for k in (1, 2))
    assert max((final[k] - one[k]).abs().max().item() for k in one) < 1e-6
    assert max((final[k] - two[k]).abs().max().item() for k in two) > 1e-4


@pytest.mark.parametrize("redundant", [False, True])
def test_a_while_redundant_stage_runs_only_while_latents_outnumber_dimensions(
    tiny, tmp_path, monkeypatch, redundant
):
    # The measured dimension is replaced by one that says whether a latent is redundant: as
    # many dimensions as surviving latents (none redundant) or one fewer (one redundant).
    measure = train.effective_dimension_of_moments

    def told(moments, surviving):
        found = measure(moments, surviving)
        if not redundant:
            return dataclasses.replace(found, dimension=len(surviving), redundant=[], noisy=[])
        return dataclasses.replace(
            found, dimension=len(surviving) - 1, redundant=[list(range(6))], noisy=[]
        )

    monkeypatch.setattr(train, "effective_dimension_of_moments", told)
    plan = Plan([Stage(1, 1e-3), Stage(3, 1e-3, 1e-4, while_redundant=True)])
    run = tmp_path / "run"
    train.train(tiny, run, config(plan=plan), progress=False)
    history = read_history(run)
    if redundant:  # the whole plan, and no note of an end
        assert len(history) == 4 and all("ends" not in row["note"] for row in history)
        # Each epoch of the stage begins by collapsing every latent of the group (all six)
        # but the one with the largest KL, as the last validation found them, and they stay
        # collapsed through the epoch: no KL at its validation.
        for before, row in zip(history[:-1], history[1:], strict=True):
            kl = {i: float(before[f"kl_{i}"]) for i in range(6)}
            collapsed = sorted(kl, key=kl.get)[:-1]
            assert all(float(row[f"kl_{i}"]) == 0.0 for i in collapsed)
            assert float(row[f"kl_{max(kl, key=kl.get)}"]) > 0.0
            assert (
                row["note"]
                == f"latents {' '.join(map(str, sorted(collapsed)))} collapsed to the prior"
            )
        return
    # Training ends after stage 1; the final model is stage 1's.
    assert len(history) == 1 and history[0]["note"] == "no latent redundant: training ends here"
    final, one = load_model(run).state_dict(), load_model(run / "stages" / "stage-1").state_dict()
    for name, weights in one.items():
        torch.testing.assert_close(final[name], weights, rtol=0, atol=0)
    # A resumed run that ended so stays ended.
    train.train(tiny, run, config(plan=plan), resume=True, progress=False)
    assert len(read_history(run)) == 1


def test_a_proposal_must_compare_with_an_earlier_stage_at_the_same_beta():
    with pytest.raises(ValueError, match="stage 2: compare_with must name an earlier stage"):
        Plan([Stage(1, 1e-3), Stage(1, 1e-3, compare_with=2)])
    with pytest.raises(ValueError, match="same constant beta"):
        Plan([Stage(1, 1e-3), Stage(1, 2e-3, compare_with=1)])
    with pytest.raises(ValueError, match="compare_with must be the number of an earlier stage"):
        Stage(1, 1e-3, compare_with=0)
    with pytest.raises(ValueError, match="stage 1: start_from must name an earlier stage"):
        Plan([Stage(1, 1e-3, start_from=1)])


def test_whole_decoder_trains_on_prefixes_and_scores_every_step(tiny, tmp_path):
    run, data = tmp_path / "run", io.save_npz(tiny, tmp_path / "tiny.npz")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(TWO_STAGES.to_dict()))
    options = ["--decoder", "whole", "--batch-size", "32"]
    result = CliRunner().invoke(
        app, ["train", str(data), "-o", str(run), "--plan", str(plan), *options]
    )
    assert result.exit_code == 0, result.output
    assert recorded(run).crop_min_steps == train.WHOLE_DECODER_CROP
    model = load_model(run)
    assert model.config == ModelConfig.whole_trajectory(
        dim=1,
        latent_dim=6,
        log_scale_mean=model.config.log_scale_mean,
        time_horizon=tiny.n_steps - 1,  # the last step trained on
    )
    assert model.config.first_predicted_step == 0
    history = read_history(run)
    expected = processes.exact_nll(*_val_arrays(tiny), start=0).mean()  # every step
    assert float(history[0]["val_exact_nll"]) == pytest.approx(expected, rel=1e-9)
    assert history[0]["val_exact_nll_rf"] in ("", "nan")
    short = ["--crop-min-steps", "5", "--max-epochs", "1"]
    refused = CliRunner().invoke(
        app, ["train", str(data), "-o", str(tmp_path / "b"), *options, *short]
    )
    assert refused.exit_code != 0 and "shorter than the 9 displacements" in refused.output


@pytest.mark.parametrize(
    "options, message",
    [
        (["--decoder", "tail"], "choose one of window, whole"),
        (["--decoder", "whole", "--paper-network"], "its window decoder"),
        (["--decoder", "whole", "--init", "fbm"], "--decoder builds a new network"),
        (["--crop-min-steps", "0"], "--crop-min-steps must be >= 1"),
        (["--precision", "16-mixed"], "choose one of 32-true, bf16-mixed"),
    ],
)
def test_decoder_options_are_checked_before_anything_is_read(tmp_path, options, message):
    result = CliRunner().invoke(
        app, ["train", str(tmp_path / "absent.npz"), "-o", str(tmp_path / "run"), *options]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_validation_exact_nll_of_a_measured_set():
    noisy = datasets.make_dataset("sbm", n_per_cell=2, n_positions=60, seed=2, noise=0.01)
    exact = train.validation_exact_nll(noisy, 32)
    expected = processes.exact_nll(
        noisy.displacements, "sbm", noisy.alpha, noisy.D, start=32, noise=0.01
    )
    assert exact["all"] == pytest.approx(expected.mean(), rel=1e-12)
    assert np.isnan(exact["rf"])  # no finite-memory floor with localisation noise


@pytest.mark.parametrize("decoder", ["window", "whole"])
def test_bf16_mixed_training_validates_in_full_precision(tiny, tmp_path, decoder):
    """bf16-mixed trains (the convolutions in bfloat16) and records its precision; the
    held-out NLL of its history is the float32 one of the model it saved, to rounding."""
    run = tmp_path / "run"
    network = ModelConfig(decoder=decoder, scale_equivariant=True)
    result = train.train(
        tiny,
        run,
        config(plan=TWO_STAGES, precision="bf16-mixed"),
        model_config=network,
        progress=False,
    )
    assert recorded(run).precision == "bf16-mixed"
    model = load_model(run)
    _, val = train.split(len(tiny), 0.2, 0)
    with torch.no_grad():
        nll = model(torch.as_tensor(tiny.subset(val).displacements), sample=False)["nll"]
    assert float(read_history(run)[-1]["val_nll"]) == pytest.approx(nll.mean().item(), abs=1e-5)
    # The same run in float32: the training loss moves by bfloat16's rounding, no more.
    fp32 = train.train(
        tiny, tmp_path / "fp32", config(plan=TWO_STAGES), model_config=network, progress=False
    )
    losses = [r.history[0]["train_loss"] for r in (result, fp32)]
    assert losses[0] != losses[1]
    assert losses[0] == pytest.approx(losses[1], abs=1e-3)  # measured: 2e-5 and 5e-6


def test_a_2d_measured_set_trains_the_whole_decoder_and_records_its_measurement(tmp_path):
    """The path of a microscope-track model (issue 11): 2D FBM with localisation noise and
    blur drawn per track, the whole decoder; the held-out exact NLL accounts for the
    measurement and the training range records it for the calibration."""
    data = datasets.make_dataset(
        "fbm", alpha=(0.5, 1.5), D=(1e-3, 1e-2), n_per_cell=30, n_positions=40, dim=2,
        reduced_noise=(0.0, 1.0), exposure=(0.0, 1.0), seed=4,
    )  # fmt: skip
    network = ModelConfig(dim=2, decoder="whole", scale_equivariant=True)
    train.train(
        data, tmp_path / "run", config(plan=TWO_STAGES), model_config=network, progress=False
    )
    history = read_history(tmp_path / "run")
    _, val = train.split(len(data), 0.2, 0)
    part = data.subset(val)
    expected = processes.exact_nll(
        part.displacements, "fbm", part.alpha, part.D, start=0, **part.measurement()
    ).mean()
    assert float(history[0]["val_exact_nll"]) == pytest.approx(expected, rel=1e-9)
    recorded_range = load_model(tmp_path / "run").training_range
    assert 0 <= recorded_range["exposure"][0] < recorded_range["exposure"][1] <= 1
    assert 0 <= recorded_range["reduced_noise"][0] < recorded_range["reduced_noise"][1] <= 1


def test_a_decoder_only_stage_keeps_the_encoder_and_improves_the_law_at_the_posterior_mean(
    tiny, tmp_path
):
    """The encoder's weights leave such a stage unchanged (so do the latents and their KL);
    the decoder's change, and its NLL at the posterior mean on the training set goes down."""
    plan = Plan([Stage(2, 0.0), Stage(2, 1e-3, 3e-4, decoder_only=True)])
    train.train(tiny, tmp_path / "run", config(plan=plan), progress=False)
    before = load_model(tmp_path / "run" / "stages" / "stage-1")
    after = load_model(tmp_path / "run")
    for name, value in before.encoder.state_dict().items():
        torch.testing.assert_close(after.encoder.state_dict()[name], value, rtol=0, atol=0)
    changed = [
        name
        for name, value in before.decoder.state_dict().items()
        if not torch.equal(after.decoder.state_dict()[name], value)
    ]
    assert changed
    x = torch.from_numpy(tiny.displacements)
    with torch.no_grad():
        nll_before = before(x, sample=False)["nll"].mean()
        nll_after = after(x, sample=False)["nll"].mean()
    assert nll_after < nll_before
    rows = read_history(tmp_path / "run")
    assert rows[-1]["kl_0"] == rows[-2]["kl_0"]  # the same latents in both epochs


def test_decoder_only_loss_is_the_nll_at_the_posterior_mean_without_encoder_gradients():
    model = VAE(ModelConfig(n_mixtures=1))
    x = torch.randn(4, 1, 80) * 0.05
    loss, terms = model.loss(x, 1e-3, decoder_only=True)
    again, _ = model.loss(x, 1e-3, decoder_only=True)
    assert loss == again  # no sampled latent
    torch.testing.assert_close(loss.detach(), model(x, sample=False)["nll"].mean().detach())
    loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())


def test_decoder_only_loss_can_encode_a_prefix_and_score_the_whole():
    """With ``encode_steps`` the latent is the posterior mean of the prefix, and the NLL is
    over every step of the whole trajectory."""
    model = VAE(ModelConfig.whole_trajectory(early_bins=6))
    torch.nn.init.normal_(model.scale_head.weight)  # zero at first: the law would not see z
    x = torch.randn(4, 1, 120) * 0.05
    loss, _ = model.loss(x, 1e-3, decoder_only=True, encode_steps=40)
    mu, _ = model.encode(x[..., :40])
    expected = -model.predict(x, mu).log_prob(x).mean()
    torch.testing.assert_close(loss.detach(), expected.detach())
    assert not torch.allclose(loss, model.loss(x, 1e-3, decoder_only=True)[0])
    with pytest.raises(ValueError, match="decoder-only"):
        model.loss(x, 1e-3, encode_steps=40)


def test_encode_steps_shorter_than_the_network_needs_is_refused(tiny, tmp_path):
    plan = Plan([Stage(1, 0.0), Stage(1, 1e-3, decoder_only=True, encode_steps=8)])
    with pytest.raises(train.TrainingError, match="stage 2: encode_steps 8 is shorter than the 33"):
        train.train(tiny, tmp_path / "run", config(plan=plan), progress=False)
