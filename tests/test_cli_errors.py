"""Bad input to every command: one line on stderr that names what is wrong, a non-zero exit, no
traceback and nothing written (issue 14).

Each case is a command line with placeholders for small files made once per module
(``{bm}``, ``{fbm}``, ...) and for paths of the test's own directory (``{out}`` does not
exist; ``{dir}`` is an existing directory, ``{file}`` an existing file, ``{ro}`` a place
nobody may write, ``{run}`` a run directory), and the words the error line must contain.
"""

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from minrep import checkpoint, datasets, io
from minrep.cli import LATENT_LIMIT, MAX_SEED, app

runner = CliRunner()
HUGE = 10**9  # trajectories that no machine's memory holds


# ---------------------------------------------------------------------------------------------
# The cases: (command line, words the error line names)

SIMULATE = [
    ("simulate fbm -o {out}.npz --seed -1", ["--seed", "-1"]),
    (f"simulate fbm -o {{out}}.npz --seed {MAX_SEED + 1}", ["--seed", str(MAX_SEED + 1)]),
    ("simulate fbm -o {out}.npz --n-per-cell 0", ["--n-per-cell", "0"]),
    ("simulate fbm -o {out}.npz --n-per-cell -5", ["--n-per-cell", "-5"]),
    ("simulate fbm -o {out}.npz --n-per-cell abc", ["--n-per-cell", "integer"]),
    (f"simulate fbm -o {{out}}.npz --n-per-cell {HUGE}", ["--n-per-cell", "memory"]),
    ("simulate fbm -o {out}.npz --length 1", ["--length", "1"]),
    ("simulate fbm -o {out}.npz --length 0", ["--length", "0"]),
    ("simulate fbm -o {out}.npz --dim 0", ["--dim", "0"]),
    ("simulate fbm -o {out}.npz --dim -2", ["--dim", "-2"]),
    ("simulate fbm -o {out}.npz --alpha nan", ["--alpha", "nan"]),
    ("simulate fbm -o {out}.npz --alpha inf", ["--alpha", "inf"]),
    ("simulate fbm -o {out}.npz --alpha 2.5", ["--alpha", "2.5", "fbm"]),
    ("simulate fbm -o {out}.npz --alpha 0", ["--alpha", "0", "fbm"]),
    ("simulate sbm -o {out}.npz --alpha=-1", ["--alpha", "-1", "sbm"]),
    ("simulate fbm -o {out}.npz --alpha 1:2:0", ["--alpha", "1:2:0"]),
    ("simulate fbm -o {out}.npz --alpha 0.2:x", ["--alpha", "0.2:x"]),
    ("simulate fbm -o {out}.npz --alpha ''", ["--alpha", "''"]),
    ("simulate fbm -o {out}.npz --alpha 0.1:1:1000000", ["--alpha", "at most"]),
    ("simulate fbm -o {out}.npz --alpha 0.5,nan", ["--alpha", "nan"]),
    ("simulate fbm -o {out}.npz --noise -0.1", ["--noise", "-0.1"]),
    ("simulate fbm -o {out}.npz --noise 0.1:0.01", ["--noise", "low must not exceed high"]),
    ("simulate fbm -o {out}.npz --noise abc", ["--noise", "abc"]),
    ("simulate fbm -o {out}.npz --noise nan", ["--noise", "nan"]),
    ("simulate fbm -o {out}.npz --exposure 1.5", ["--exposure", "1.5"]),
    ("simulate fbm -o {out}.npz --exposure 0:2", ["--exposure", "(0.0, 2.0)"]),
    ("simulate fbm -o {out}.npz --D 0", ["--D", "0"]),
    ("simulate fbm -o {out}.npz --D=-1e-3", ["--D", "-0.001"]),
    ("simulate fbm -o {out}.npz --D inf", ["--D", "inf"]),
    ("simulate fbm -o {out}.npz --D=-1:1:3", ["--D", "start and stop > 0"]),
    ("simulate bm -o {out}.npz --alpha 0.5", ["--alpha", "Brownian"]),
    ("simulate levy -o {out}.npz", ["levy"]),
    ("simulate fbm -o {out}.npz --preset huge", ["--preset", "huge"]),
    ("simulate fbm -o {out}.npz --backend torch", ["--backend", "torch"]),
    ("simulate ctrw -o {out}.npz", ["ctrw", "--backend andi"]),
    ("simulate fbm", ["--output"]),
    ("simulate fbm -o {out}.csv", ["--output", "out.csv", ".npz"]),
    ("simulate fbm -o {out}", ["--output", "out", ".npz"]),
    ("simulate fbm -o {dir}", ["--output", "adir", "is a directory"]),
    ("simulate fbm -o {file}/x.npz", ["--output", "afile.txt", "is a file"]),
    ("simulate fbm -o {ro}/x.npz", ["--output", "cannot write"]),
]

EXACT_NLL = [
    ("exact-nll {fbm} --memory -1", ["--memory", "-1"]),
    ("exact-nll {fbm} --start -1", ["--start", "-1"]),
    ("exact-nll {fbm} --start 500", ["--start 500", "fbm.npz", "minimum of 501"]),
    ("exact-nll {fbm} --start 59", ["--start 59", "fbm.npz"]),
    ("exact-nll {fbm} --start abc", ["--start", "integer"]),
    ("exact-nll {unlabelled}", ["unlabelled.npz", "alpha, D"]),
    ("exact-nll {empty}", ["empty.npz", "no trajectory"]),
    ("exact-nll {nan_alpha}", ["nan_alpha.npz", "trajectory 3", "alpha = nan"]),
    ("exact-nll {zero_d}", ["zero_d.npz", "trajectory 2", "D = 0"]),
    ("exact-nll {mixed}", ["mixed.npz", "fbm, sbm"]),
    ("exact-nll {ctrw}", ["ctrw.npz", "'ctrw'"]),
    ("exact-nll {ragged}", ["ragged.npz", "equal length"]),
    ("exact-nll {data}/missing.npz", ["missing.npz", "no such file"]),
    ("exact-nll {garbage}", ["garbage.npz", "not an .npz"]),
    ("exact-nll {notes}", ["notes.txt", "not an .npz"]),
    ("exact-nll {dir}", ["adir", "is a directory"]),
]

TRAIN = [
    ("train {fbm} -o {out} --devices 0", ["--devices", "'0'"]),
    ("train {fbm} -o {out} --devices=-2", ["--devices", "'-2'"]),
    ("train {fbm} -o {out} --devices abc", ["--devices", "'abc'"]),
    ("train {fbm} -o {out} --devices 0,1 --accelerator cpu", ["--devices 0,1", "GPU"]),
    ("train {fbm} -o {out} --batch-size 0", ["--batch-size", "0"]),
    ("train {fbm} -o {out} --batch-size -1", ["--batch-size", "-1"]),
    ("train {fbm} -o {out} --batch-size abc", ["--batch-size", "integer"]),
    ("train {fbm} -o {out} --lr nan", ["--lr", "nan"]),
    ("train {fbm} -o {out} --lr -1", ["--lr", "-1"]),
    ("train {fbm} -o {out} --lr 0", ["--lr", "0"]),
    ("train {fbm} -o {out} --lr inf", ["--lr", "inf"]),
    ("train {fbm} -o {out} --latent-dim 0", ["--latent-dim", "0"]),
    ("train {fbm} -o {out} --accelerator tpu2", ["--accelerator", "tpu2"]),
    ("train {fbm} -o {out} --num-nodes 0", ["--num-nodes", "0"]),
    ("train {fbm} -o {out} --max-epochs 0", ["--max-epochs", "0"]),
    ("train {fbm} -o {out} --seed -1", ["--seed", "-1"]),
    ("train {fbm} -o {out} --preset huge", ["--preset", "huge"]),
    ("train {fbm} -o {out} --plan {empty_stages}", ["--plan", "empty_stages.json", "stages"]),
    ("train {fbm} -o {out} --plan {no_stages}", ["--plan", "no_stages.json", "stages"]),
    ("train {fbm} -o {out} --plan {zero_epochs}", ["zero_epochs.json", "stage 1", "epochs"]),
    ("train {fbm} -o {out} --plan {nan_lr}", ["nan_lr.json", "stage 2", "lr", "nan"]),
    ("train {fbm} -o {out} --plan {typo}", ["typo.json", "stage 1", "epoch"]),
    ("train {fbm} -o {out} --plan {text_epochs}", ["text_epochs.json", "stage 1", "'three'"]),
    ("train {fbm} -o {out} --plan {cosine}", ["cosine.json", "stage 1", "'cosine'"]),
    ("train {fbm} -o {out} --plan {bad_ramp}", ["bad_ramp.json", "stage 2", "epochs"]),
    ("train {fbm} -o {out} --plan {notes}", ["--plan", "notes.txt", "not JSON"]),
    ("train {fbm} -o {out} --plan {data}/missing.json", ["--plan", "missing.json"]),
    ("train {fbm} -o {out} --plan {zero_epochs} --preset paper", ["--preset", "--plan"]),
    ("train {fbm} -o {out} --init nomodel", ["--init", "nomodel"]),
    ("train {fbm} -o {out} --init bm --latent-dim 3", ["--init", "--latent-dim"]),
    ("train {fbm} -o {out} --batch-size 1000", ["fbm.npz", "1000"]),
    ("train {data}/missing.npz -o {out}", ["missing.npz", "no such file"]),
    ("train {empty} -o {out}", ["empty.npz", "0 trajectories"]),
    ("train {garbage} -o {out}", ["garbage.npz", "not an .npz"]),
    ("train {ragged} -o {out}", ["ragged.npz", "one length"]),
    ("train {fbm} -o {out} --resume", ["out", "nothing to resume"]),
    ("train {fbm} -o {run}", ["run", "--resume"]),
    ("train {fbm} -o {file}", ["--output", "afile.txt", "give a directory"]),
    ("train {dir} -o {out}", ["adir", "is a directory"]),
    ("train {fbm} -o {file}/run", ["--output", "afile.txt", "is a file"]),
    ("train {fbm} -o {ro}/run", ["--output", "cannot write"]),
]
if not torch.cuda.is_available():  # a GPU asked for where there is none
    TRAIN.append(("train {fbm} -o {out} --accelerator gpu", ["--accelerator gpu", "no GPU"]))

GENERATE = [
    ("generate bm -o {out}.npz --z 0=1 --n -3", ["--n", "-3"]),
    ("generate bm -o {out}.npz --z 0=1 --n 0", ["--n", "0"]),
    ("generate bm -o {out}.npz --z 0=1 --batch-size 0", ["--batch-size", "0"]),
    ("generate bm -o {out}.npz --sweep 0=1:2:3 --n-per-value 0", ["--n-per-value", "0"]),
    ("generate bm -o {out}.npz --z 0=1 --n-per-value 2", ["--n-per-value", "--sweep"]),
    ("generate bm -o {out}.npz --z 0=1,0=2", ["--z", "latent 0", "twice"]),
    ("generate bm -o {out}.npz --z 0=nan", ["--z", "nan"]),
    ("generate bm -o {out}.npz --z 0=inf", ["--z", "inf"]),
    ("generate bm -o {out}.npz --z 0=1e30", ["--z", "1e+30"]),
    (f"generate bm -o {{out}}.npz --z 0=-{LATENT_LIMIT + 1:g}", ["--z", "-51"]),
    ("generate bm -o {out}.npz --z 0", ["--z", "index=value"]),
    ("generate bm -o {out}.npz --z a=1", ["--z", "'a=1'"]),
    ("generate bm -o {out}.npz --z 0=1:2:3", ["--z", "one value per latent"]),
    ("generate bm -o {out}.npz --z 7=1", ["--z", "latent index 7", "out of range"]),
    ("generate bm -o {out}.npz --z 0=1 --length 1", ["--length", "1"]),
    ("generate bm -o {out}.npz --z 0=1 --length 0", ["--length", "0"]),
    ("generate bm -o {out}.npz --sweep 0=1:2", ["--sweep", "0=1:2"]),
    ("generate bm -o {out}.npz --sweep 0=1:2:0", ["--sweep", "0=1:2:0"]),
    ("generate bm -o {out}.npz --sweep 0=-100:100:3", ["--sweep", "-100"]),
    ("generate bm -o {out}.npz --sweep 0=nan,1", ["--sweep", "nan"]),
    ("generate bm -o {out}.npz --sweep 9=1:2:3", ["--sweep", "latent index 9"]),
    ("generate bm -o {out}.npz --from {dir}", ["--from", "adir", "is a directory"]),
    ("generate bm -o {out}.npz", ["--z", "--from", "--sweep"]),
    ("generate bm -o {out}.npz --z 0=1 --sweep 0=1:2:3", ["exactly one"]),
    ("generate bm -o {out}.npz --z 0=1 --context start", ["--context", "--from"]),
    ("generate bm -o {out}.npz --z 0=1 --context middle", ["--context"]),
    ("generate bm -o {out}.npz --z 0=1 --seed -1", ["--seed", "-1"]),
    (f"generate bm -o {{out}}.npz --z 0=1 --n {HUGE}", [f"--n {HUGE}", "memory"]),
    ("generate bm -o {out}.npz --from {empty}", ["empty.npz", "no trajectory"]),
    ("generate bm -o {out}.npz --from {data}/missing.npz", ["missing.npz", "no such file"]),
    ("generate bm -o {out}.npz --from {twod}", ["twod.npz", "dim 2"]),
    ("generate bm -o {out}.npz --from {notes}", ["notes.txt", "unknown file type"]),
    ("generate bm -o {out}.npz --from {short}", ["short.npz", "minimum of"]),
    ("generate bm -o {bm} --from {bm}", ["--output", "bm.npz", "also the input"]),
    ("generate nomodel -o {out}.npz --z 0=1", ["nomodel", "not a model directory"]),
    ("generate {dir} -o {out}.npz --z 0=1", ["adir", "config.json"]),
    ("generate bm -o {out}.csv --z 0=1", ["--output", "out.csv", ".npz"]),
    ("generate bm -o {dir} --z 0=1", ["--output", "adir", "is a directory"]),
    ("generate bm -o {file}/g.npz --z 0=1", ["--output", "afile.txt", "is a file"]),
    ("generate bm -o {ro}/g.npz --z 0=1", ["--output", "cannot write"]),
]

ENCODE = [
    ("encode bm {data}/missing.npz -o {out}.npz", ["missing.npz", "no such file"]),
    ("encode bm {notes} -o {out}.npz", ["notes.txt", "unknown file type"]),
    ("encode bm {garbage} -o {out}.npz", ["garbage.npz", "not an .npz"]),
    ("encode bm {dir} -o {out}.npz", ["adir", "is a directory"]),
    ("encode bm {empty} -o {out}.npz", ["empty.npz", "no trajectory"]),
    ("encode bm {short} -o {out}.npz", ["short.npz", "minimum of"]),
    ("encode bm {nan_csv} -o {out}.csv", ["nan.csv", "line 4", "x"]),
    ("encode bm {gap_csv} -o {out}.csv", ["gap.csv", "particle 1", "frame"]),
    ("encode nomodel {bm} -o {out}.npz", ["nomodel", "not a model directory"]),
    ("encode {dir} {bm} -o {out}.npz", ["adir", "config.json"]),
    ("encode bm {bm} -o {out}.txt", ["--output", "out.txt", ".npz or .csv"]),
    ("encode bm {bm} -o {dir}", ["--output", "adir", "is a directory"]),
    ("encode bm {bm} -o {file}/e.npz", ["--output", "afile.txt", "is a file"]),
    ("encode bm {bm} -o {ro}/e.npz", ["--output", "cannot write"]),
    ("encode bm {bm} -o {bm}", ["--output", "bm.npz", "also the input"]),
    ("encode bm {bm}", ["--output"]),
    ("encode bm {bm} -o {out}.npz --split-gaps", ["--split-gaps", "bm.npz"]),
    ("encode bm {short} -o {out}.npz --skip-short", ["--skip-short", "short.npz"]),
]

ANALYZE = [
    ("analyze bm -o {file} --data {bm}", ["--output", "afile.txt", "give a directory"]),
    ("analyze bm -o {out} --data {dir}", ["--data", "adir", "is a directory"]),
    ("analyze bm -o {file}/report --data {bm}", ["--output", "afile.txt", "is a file"]),
    ("analyze bm -o {ro}/report --data {bm}", ["--output", "cannot write"]),
    ("analyze bm -o {out} --data {data}/missing.npz", ["missing.npz", "no such file"]),
    ("analyze bm -o {out} --data {unlabelled}", ["unlabelled.npz", "alpha, D"]),
    ("analyze bm -o {out} --data {empty}", ["empty.npz", "no trajectory"]),
    ("analyze bm -o {out} --data {twod}", ["twod.npz", "dim 2"]),
    ("analyze bm -o {out} --data {nan_alpha}", ["nan_alpha.npz", "trajectory 3", "nan"]),
    ("analyze bm -o {out} --data {zero_d}", ["zero_d.npz", "trajectory 2", "D = 0"]),
    ("analyze bm -o {out} --data {ragged}", ["ragged.npz", "one length"]),
    ("analyze bm -o {out} --data {notes}", ["notes.txt", "not an .npz"]),
    ("analyze bm -o {out} --data {bm} --n-per-cell 2", ["--n-per-cell", "--data"]),
    ("analyze bm -o {out} --n-per-cell 0", ["--n-per-cell", "0"]),
    (f"analyze bm -o {{out}} --n-per-cell {HUGE}", [f"--n-per-cell {HUGE}", "memory"]),
    ("analyze bm -o {out} --seed -1", ["--seed", "-1"]),
    ("analyze nomodel -o {out} --data {bm}", ["nomodel", "not a model directory"]),
    ("analyze {noprocess} -o {out}", ["noprocess", "--data"]),
]

DEMO = [
    ("demo --model nomodel -o {out}", ["nomodel", "not a model directory"]),
    ("demo --model {noprocess} -o {out}", ["noprocess", "--data"]),
    ("demo --model bm -o {file}", ["--output", "afile.txt", "give a directory"]),
    ("demo --model bm -o {out} --data {dir}", ["--data", "adir", "is a directory"]),
    ("demo --model bm -o {file}/report", ["--output", "afile.txt", "is a file"]),
    ("demo --model bm -o {ro}/report", ["--output", "cannot write"]),
    ("demo --model bm -o {out} --n-per-cell 0", ["--n-per-cell", "0"]),
    ("demo --model bm -o {out} --seed -1", ["--seed", "-1"]),
    ("demo --model bm -o {out} --data {data}/missing.npz", ["missing.npz", "no such file"]),
    ("demo --model bm -o {out} --data {notes}", ["notes.txt", "unknown file type"]),
    ("demo --model bm -o {out} --data {empty}", ["empty.npz", "no trajectory"]),
    ("demo --model bm -o {out} --data {garbage}", ["garbage.npz", "not an .npz"]),
    ("demo --model fbm -o {out} --data {nan_alpha}", ["nan_alpha.npz", "trajectory 3", "nan"]),
    ("demo --model fbm -o {out} --data {zero_d}", ["zero_d.npz", "trajectory 2", "D = 0"]),
]

USAGE = [
    ("levitate", ["levitate"]),
    ("generate", ["model"]),
    ("simulate fbm -o {out}.npz --sigma 2", ["--sigma"]),
]

CASES = {
    "simulate": SIMULATE,
    "exact-nll": EXACT_NLL,
    "train": TRAIN,
    "generate": GENERATE,
    "encode": ENCODE,
    "analyze": ANALYZE,
    "demo": DEMO,
    "usage": USAGE,
}
PARAMS = [
    pytest.param(line, words, id=f"{command}-{i}:{line.split(' ', 1)[-1][:60]}")
    for command, cases in CASES.items()
    for i, (line, words) in enumerate(cases)
]


def test_at_least_a_hundred_bad_inputs_across_every_command():
    counts = {command: len(cases) for command, cases in CASES.items()}
    assert sum(counts.values()) >= 100, counts
    assert all(count >= 10 for command, count in counts.items() if command != "usage"), counts


# ---------------------------------------------------------------------------------------------
# The files the cases read, made once


def _write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    assert (
        runner.invoke(
            app, ["simulate", "bm", "--n-per-cell", "2", "-o", str(root / "bm.npz")]
        ).exit_code
        == 0
    )
    fbm = datasets.make_dataset("fbm", n_per_cell=1, n_positions=60, seed=1)
    paths = {"data": root, "bm": root / "bm.npz", "fbm": io.save_npz(fbm, root / "fbm.npz")}

    def relabel(name, **labels):
        changed = io.Trajectories(fbm.displacements, {**fbm.labels, **labels}, fbm.meta)
        paths[name] = io.save_npz(changed, root / f"{name}.npz")

    alpha, D = fbm.alpha.copy(), fbm.D.copy()
    alpha[3], D[2] = np.nan, 0.0
    relabel("nan_alpha", alpha=alpha)
    relabel("zero_d", D=D)
    relabel("mixed", process=np.array(["fbm", "sbm"] * (len(fbm) // 2)))
    relabel("ctrw", process=np.full(len(fbm), "ctrw"))
    rng = np.random.default_rng(0)
    for name, trajectories in {
        "unlabelled": io.Trajectories(rng.normal(size=(5, 1, 100))),
        "empty": io.Trajectories(np.zeros((0, 1, 100))),
        "twod": io.Trajectories(rng.normal(size=(5, 2, 100))),
        "short": datasets.make_dataset("bm", n_per_cell=1, n_positions=20),
        "ragged": io.Trajectories(
            rng.normal(size=(12, 1, 100)),
            {"alpha": np.full(12, 1.0), "D": np.full(12, 1e-3)},
            lengths=np.r_[np.full(6, 100), np.full(6, 60)],
        ),
    }.items():
        paths[name] = io.save_npz(trajectories, root / f"{name}.npz")
    paths["garbage"] = root / "garbage.npz"
    paths["garbage"].write_text("not a zip archive")
    paths["notes"] = root / "notes.txt"
    paths["notes"].write_text("a text file\n")
    track = "particle,frame,x\n" + "".join(f"0,{t},{0.1 * t}\n" for t in range(40))
    paths["nan_csv"] = root / "nan.csv"
    paths["nan_csv"].write_text(track.replace("0,2,0.2", "0,2,nan"))
    paths["gap_csv"] = root / "gap.csv"
    paths["gap_csv"].write_text(track + "".join(f"1,{t},0\n" for t in (*range(5), 9)))
    stage = {"epochs": 2, "beta": 0.0, "lr": 1e-3, "policy": "one-cycle"}
    plans = {
        "empty_stages": {"stages": []},
        "no_stages": {},
        "zero_epochs": {"stages": [{**stage, "epochs": 0}]},
        "nan_lr": {"stages": [stage, {**stage, "lr": float("nan")}]},
        "typo": {"stages": [{"epoch": 2}]},
        "text_epochs": {"stages": [{**stage, "epochs": "three"}]},
        "cosine": {"stages": [{**stage, "beta": {"kind": "cosine", "value": 1.0}}]},
        "bad_ramp": {
            "stages": [stage, {**stage, "beta": {"kind": "linear", "start": 0, "end": 1}}]
        },
    }
    for name, plan in plans.items():
        paths[name] = _write_json(root / f"{name}.json", plan)
    # A model whose config.json does not say which process it was trained on.
    paths["noprocess"] = root / "noprocess"
    shutil.copytree(checkpoint.resolve("bm"), paths["noprocess"])
    config = json.loads((paths["noprocess"] / "config.json").read_text())
    config["data"].pop("process")
    _write_json(paths["noprocess"] / "config.json", config)
    return paths


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """A directory this process cannot write in: one without write permission, or (for
    root, whom permissions do not stop) /sys; None where there is none."""
    place = tmp_path_factory.mktemp("read-only")
    place.chmod(0o555)
    candidates = [place, Path("/sys")]
    chosen = None
    for candidate in candidates:
        probe = candidate / f".probe-{secrets.token_hex(4)}"
        try:
            probe.touch()
            probe.unlink()
        except OSError:
            chosen = candidate
            break
    yield chosen
    place.chmod(0o755)


def _snapshot(*roots: Path) -> dict[str, int]:
    """Every file and directory under ``roots`` (hidden ones too), with its size."""
    found = {}
    for root in roots:
        for path in root.rglob("*"):
            found[str(path)] = path.stat().st_size if path.is_file() else -1
    return found


# ---------------------------------------------------------------------------------------------
# The test


@pytest.mark.parametrize(("line", "words"), PARAMS)
def test_bad_input_is_one_line_and_leaves_nothing(line, words, files, read_only, tmp_path):
    if "{ro}" in line and read_only is None:
        pytest.skip("no place here that this process cannot write in")
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile.txt").write_text("keep me\n")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    places = {
        **{name: str(path) for name, path in files.items()},
        "out": str(tmp_path / "out"),
        "dir": str(tmp_path / "adir"),
        "file": str(tmp_path / "afile.txt"),
        "run": str(run),
        "ro": str(read_only),
    }
    before = _snapshot(tmp_path, files["data"])

    result = runner.invoke(app, shlex.split(line.format(**places)))

    assert result.exit_code != 0, result.output
    # An error the command reports, not an exception that escaped it.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""  # nothing reported as done
    # Nothing written: no output, no temporary file, the existing file untouched.
    assert _snapshot(tmp_path, files["data"]) == before
    assert (tmp_path / "afile.txt").read_text() == "keep me\n"


def test_the_installed_command_prints_one_line(files, tmp_path):
    # The console entry point itself (not the test runner): exit code 2, one line, the
    # program named as the user typed it.
    out = tmp_path / "g.csv"
    command = [sys.executable, "-m", "minrep", "simulate", "bm", "-o", str(out)]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --output {out}: this command writes .npz files; give a name ending in .npz"
    ]
    assert not out.exists()
    result = subprocess.run(
        [sys.executable, "-m", "minrep", "simulate", "bm", "-o", str(tmp_path / "x.npz"), "-n"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "minrep simulate --help" in result.stderr and "Traceback" not in result.stderr
