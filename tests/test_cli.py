"""Tests of the minrep command line: each command against the library call it wraps."""

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from minrep import andi, datasets, io, processes
from minrep.analysis import YARDSTICKS
from minrep.cli import app, parse_latent_values, parse_sweep, parse_values
from minrep.demo import metric_lines

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_parse_values():
    assert parse_values("0.5") == (0.5,)
    assert parse_values("0.2,1.0") == (0.2, 1.0)
    np.testing.assert_allclose(parse_values("0.2:1.8:5"), np.linspace(0.2, 1.8, 5))
    np.testing.assert_allclose(parse_values("1e-5:1e-2:4", log=True), np.geomspace(1e-5, 1e-2, 4))
    assert parse_values(None) is None
    with pytest.raises(typer.BadParameter, match="start:stop:count"):
        parse_values("1:2")


def test_latent_specs_share_the_values_parser():
    assert parse_latent_values("0=-1.5,1=0.3") == {0: -1.5, 1: 0.3}
    index, values = parse_sweep("1=-4:4:5")
    assert index == 1
    np.testing.assert_allclose(values, np.linspace(-4, 4, 5))
    assert parse_sweep("2=-1,0,1.5") == (2, (-1.0, 0.0, 1.5))  # a list, as for --alpha
    for bad, message in [("1=-4:4", "index=start:stop:count"), ("1", "index=start:stop:count")]:
        with pytest.raises(typer.BadParameter, match=message):
            parse_sweep(bad)
    for bad in ("0=x", "0", "a=1"):
        with pytest.raises(typer.BadParameter, match="index=value"):
            parse_latent_values(bad)
    with pytest.raises(typer.BadParameter, match="one value per latent"):
        parse_latent_values("0=1:2:3")


def _modules_after(code: str) -> set[str]:
    """Top-level packages imported by running ``code`` in a fresh interpreter."""
    script = (
        f"import sys\n{code}\nprint(','.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.strip().splitlines()[-1].split(","))


def test_data_commands_do_not_import_torch(tmp_path):
    # simulate and exact-nll run without loading torch (it costs seconds at start-up).
    path = tmp_path / "bm.npz"
    code = (
        "from typer.testing import CliRunner\n"
        "from minrep.cli import app\n"
        "for args in ({!r}, {!r}):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, result.output"
    ).format(
        ["simulate", "bm", "-o", str(path), "--n-per-cell", "2", "--length", "50"],
        ["exact-nll", str(path), "--start", "5"],
    )
    modules = _modules_after(code)
    assert "minrep" in modules and "typer" in modules
    assert "torch" not in modules and "lightning" not in modules
    assert io.load_npz(path).displacements.shape == (8, 1, 49)


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
    assert "T = 50" in result.output  # --length is positions: 49 displacements
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


def test_simulate_exposure_on_levels(tmp_path):
    path = tmp_path / "x.npz"
    result = run("simulate", "bm", "-o", path, "--n-per-cell", "30", "--exposure", "0:1:3")
    assert result.exit_code == 0, result.output
    assert set(np.unique(io.load_npz(path).labels["exposure"])) == {0.0, 0.5, 1.0}
    result = run("simulate", "bm", "-o", tmp_path / "y.npz", "--exposure", "0:1:1.5")
    assert result.exit_code == 2 and "count of levels must be a whole number >= 2" in result.output


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


def test_exact_nll_command_takes_the_measurement_from_the_labels(tmp_path):
    data = datasets.make_dataset(
        "fbm", n_per_cell=2, n_positions=60, seed=1, noise=(0.0, 0.02), exposure=(0.0, 1.0)
    )
    path = io.save_npz(data, tmp_path / "noisy.npz")
    result = run("exact-nll", path, "--start", 0)
    assert result.exit_code == 0, result.output
    value = float(re.search(r"exact NLL (-?\d+\.\d+)", result.output).group(1))
    measured = processes.exact_nll(
        data.displacements, "fbm", data.alpha, data.D, start=0, **data.measurement()
    )
    assert value == pytest.approx(measured.mean(), abs=1e-5)
    plain = processes.exact_nll(data.displacements, "fbm", data.alpha, data.D, start=0)
    assert abs(plain.mean() - measured.mean()) > 1e-3  # ignoring it would show
    result = run("exact-nll", path, "--memory", 5)
    assert result.exit_code == 2 and "--memory" in result.output and "noise" in result.output


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


def test_metric_lines_explain_each_kind_once():
    metrics = {
        "surviving_latents": [0, 5],
        "kl_per_latent": [3.1, 0.01, 1.8],
        "effective_dimension": 2,
        "effective_dimension_snr": [158.3, 35.5, 2.5],
        "r2_alpha": 0.97,
        "tamsd_r2_alpha": 0.96,
        "bayes_r2_alpha": {"decoder_steps": 0.98, "all_steps": 0.985},
        "mig": 0.56,
        "dci": {"disentanglement": 0.65, "completeness": 0.74, "informativeness": 0.99},
        "nll_mean": -2.3089,
        "exact_nll_mean": -2.3085,
        "nll_gap": -0.0004,
        "generation": {
            "n_generated": 980,
            "alpha_g_error_lags_1_20": 0.026,
            "alpha_g_error_lags_380_400": 0.37,
        },
    }
    lines = metric_lines(metrics)
    text = " ".join(line.strip() for line in lines)
    kinds = ("kl_per_latent", "effective_dimension", "r2", "mig", "dci", "nll_gap")
    for kind in (*kinds, "alpha_g_error"):
        # The yardstick's first words appear exactly once, after the numbers it explains.
        opening = "(" + " ".join(YARDSTICKS[kind].split()[:4])
        assert text.count(opening) == 1, kind

    def row(prefix):  # index of the first line that starts with prefix (ignoring alignment)
        return next(i for i, line in enumerate(lines) if line.strip().startswith(prefix))

    def explanation(kind):
        return row("(" + " ".join(YARDSTICKS[kind].split()[:4]))

    assert row("kl_per_latent:") < explanation("kl_per_latent") < row("r2_alpha:")
    assert "0.1 nat" in " ".join(lines[explanation("kl_per_latent") :][:3])
    # The dimension and its ratios (large ones without an exponent), then their yardstick.
    assert row("effective_dimension: 2") < row("effective_dimension_snr: 158, 36, 2.5")
    assert row("effective_dimension_snr:") < explanation("effective_dimension") < row("r2_alpha:")
    assert row("bayes_r2_alpha (all_steps)") < explanation("r2") < row("mig:")
    assert row("nll_gap:") < explanation("nll_gap") < row("n_generated:")
    assert row("alpha_g_error_lags_380_400:") < explanation("alpha_g_error")
    assert "disentanglement 0.6500, completeness 0.7400" in text
    assert "bayes_r2_alpha (all_steps): 0.9850" in text
    assert all(len(line) <= 100 for line in lines if line.strip().startswith("("))


def _resumable_run(tmp_path):
    """A run directory as train() leaves it after an epoch (batch size 32, the quick plan),
    and a dataset to resume it on."""
    from minrep.model import ModelConfig
    from minrep.train import TrainConfig

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    config = {
        "model": ModelConfig(scale_equivariant=True, log_scale_mean=-3.0).to_dict(),
        "training": TrainConfig(batch_size=32, seed=4).resolved().to_dict(),
        "data": {},
    }
    (run / "config.json").write_text(json.dumps(config))
    data = datasets.make_dataset("fbm", n_per_cell=1, n_positions=60)
    return run, io.save_npz(data, tmp_path / "data.npz")


def test_resume_says_which_given_settings_it_does_not_use(tmp_path, monkeypatch):
    from minrep import train as train_module

    calls = []

    def fake_train(data, run_dir, config, **kwargs):  # the run itself is train.py's to test
        calls.append((data, run_dir, config, kwargs))
        return train_module.TrainResult(run_dir, None, [], True)

    monkeypatch.setattr(train_module, "train", fake_train)
    monkeypatch.setattr(train_module, "keep_freed_memory", lambda: True)
    run, data = _resumable_run(tmp_path)
    resume = ["train", str(data), "-o", str(run), "--resume"]
    # Its own settings again, and when to stop (a per-call setting): not a word.
    result = runner.invoke(app, [*resume, "--batch-size", "32", "--seed", "4", "--max-epochs", "5"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert calls[-1][2].max_epochs == 5 and calls[-1][3]["resume"] is True
    assert calls[-1][3]["source"] == str(data)  # errors and config.json name the file
    # Another batch size: one line saying it is not used, and what is.
    result = runner.invoke(app, [*resume, "--batch-size", "64"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: --batch-size 64 is not used: {run} resumes with its own batch size 32 "
        f"({run / 'config.json'}); start a new run to change it"
    ]
    # Each setting that differs, a line of its own: seed, learning rate (the plan), network.
    result = runner.invoke(app, [*resume, "--seed", "5", "--lr", "0.01", "--latent-dim", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("warning: ") for line in lines)
    assert "--seed 5 is not used" in lines[0] and "seed 4" in lines[0]
    assert "--lr 0.01 is not used" in lines[1] and "its own plan" in lines[1]
    assert "--latent-dim/--paper-network not used" in lines[2] and "6 latents" in lines[2]
    # The quick preset's plan is the run's plan: --preset quick is no change.
    result = runner.invoke(app, [*resume, "--preset", "quick"])
    assert result.exit_code == 0 and result.stderr == ""
    result = runner.invoke(app, [*resume, "--preset", "paper"])
    assert "--preset paper is not used" in result.stderr


def test_errors_keep_their_exit_status_and_os_errors_are_one_line(tmp_path, monkeypatch):
    from minrep import MinrepError
    from minrep import train as train_module

    class Stopped(MinrepError):
        exit_code = 143

    def stopped(*args, **kwargs):
        raise Stopped("training stopped by SIGTERM after epoch 3")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "run" / "history.csv"))

    monkeypatch.setattr(train_module, "keep_freed_memory", lambda: True)
    _, data = _resumable_run(tmp_path)
    for fake, status, line in [
        (stopped, 143, "error: training stopped by SIGTERM after epoch 3"),
        (disk_full, 1, f"error: {tmp_path / 'run' / 'history.csv'}: No space left on device"),
    ]:
        monkeypatch.setattr(train_module, "train", fake)
        result = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "new")])
        assert result.exit_code == status
        assert result.stderr.splitlines() == [line]


def test_check_output_accepts_what_it_can_write(tmp_path):
    from minrep.cli import OutputError, check_output

    # New parent directories are created by the command: fine; so is replacing a file.
    assert check_output(tmp_path / "a" / "b" / "x.npz", (".npz",)) == tmp_path / "a/b/x.npz"
    existing = tmp_path / "old.NPZ"
    existing.write_bytes(b"old")
    check_output(existing, (".npz",))
    check_output(tmp_path, kind="directory")
    check_output(tmp_path / "new" / "report", kind="directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.NPZ"]  # the probe is gone
    with pytest.raises(OutputError, match="--where .*old.NPZ: is a file; give a directory"):
        check_output(existing, kind="directory", option="--where")
    with pytest.raises(OutputError, match="is also the input"):
        same = tmp_path / ".." / tmp_path.name / existing.name  # another spelling of it
        check_output(existing, (".npz",), inputs=(None, same))


def test_warnings_are_one_line(tmp_path):
    # A track that never moves is worth a warning, printed as one line without Python's
    # file:line prefix (in a subprocess: pytest captures warnings itself).
    frames = np.arange(40)
    moving = np.cumsum(np.random.default_rng(0).normal(0, 0.1, 40))
    table = pd.DataFrame(
        {
            "particle": np.repeat([1, 2], 40),
            "frame": np.tile(frames, 2),
            "x": np.concatenate([moving, np.full(40, 3.0)]),
        }
    )
    table.to_csv(tmp_path / "tracks.csv", index=False)
    out = subprocess.run(
        [sys.executable, "-m", "minrep", "encode", "bm", str(tmp_path / "tracks.csv")]
        + ["-o", str(tmp_path / "latents.csv")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if "particle 2" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: "), out.stderr
    assert "UserWarning" not in out.stderr
