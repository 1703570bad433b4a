"""Is a training recipe minimal for every seed? (issue 15)

For each process and seed S: simulate the paper's training set with data seed S + 100
(``minrep simulate PROCESS --preset paper --seed S+100``), train it exactly as a user would
(``minrep train DATA -o RUN --preset quick --seed S``, or ``--plan FILE``), then judge the
final model on a fresh held-out set (the ``paper-test`` grid, 2 trajectories per cell, seed
S + 200, numbers inside the training range): KL per latent, surviving latents (KL > 0.1 nat),
effective dimension, NLL gap to the exact NLL and the readout R^2 of alpha and log10 D.

    python scripts/seed_study.py --workdir study --processes bm fbm sbm --seeds 1 2 3

Runs already finished are judged again without retraining; an interrupted run resumes from
its last checkpoint. Results go to ``docs/results/seed_study_<recipe>.json`` after every run
(written atomically), so a stopped study loses nothing. One run of the ``quick`` preset takes
about 40 minutes on 2 CPU cores: run the study in the background, alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from minrep import analysis, checkpoint, datasets, io
from minrep.schedule import PRESETS

PARAMETERS = {"bm": 1, "fbm": 2, "sbm": 2}
"""Parameters of each process: the number of latents a minimal representation keeps."""
NLL_TOLERANCE = 0.005  # nat per displacement (issue 15)
DATA_SEED_OFFSET, TEST_SEED_OFFSET = 100, 200


def run_command(*args: str) -> None:
    print("$ minrep " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "minrep", *args], check=True)


def train_run(process: str, seed: int, recipe: str, workdir: Path) -> tuple[Path, list[str]]:
    """Simulate and train (or resume, or reuse) one run; returns its directory and the
    commands that made it."""
    data = workdir / "data" / f"{process}-{seed + DATA_SEED_OFFSET}.npz"
    simulate = ["simulate", process, "--preset", "paper", "--seed", str(seed + DATA_SEED_OFFSET)]
    simulate += ["-o", str(data)]
    if not data.exists():
        run_command(*simulate)
    name = Path(recipe).stem if recipe not in PRESETS else recipe
    run_dir = workdir / "runs" / f"{process}-{name}-seed{seed}"
    recipe_option = ["--preset", recipe] if recipe in PRESETS else ["--plan", recipe]
    train = ["train", str(data), "-o", str(run_dir), *recipe_option, "--seed", str(seed)]
    # The final model is written only when training ends (the plan's end, or earlier where
    # its last stage runs only while a latent is redundant).
    if not (run_dir / "model.safetensors").exists():
        resume = (run_dir / "checkpoints" / "last.ckpt").exists()
        run_command(*train, *(["--resume"] if resume else []))
    return run_dir, ["minrep " + " ".join(simulate), "minrep " + " ".join(train)]


def judge(process: str, seed: int, run_dir: Path) -> dict:
    """Numbers of the trained model on a fresh held-out set, and of its training."""
    model = checkpoint.load_model(run_dir)
    test = datasets.make_dataset(process, "paper-test", n_per_cell=2, seed=seed + TEST_SEED_OFFSET)
    report = analysis.analyze(model, test, seed=seed, progress=False, check_generation=False)
    metrics = report.metrics
    history = pd.read_csv(run_dir / "history.csv")
    last = history.iloc[-1]
    expected = PARAMETERS[process]
    n_surviving = len(metrics["surviving_latents"])
    minimal = (
        n_surviving == expected
        and metrics["effective_dimension"] == expected
        and abs(metrics["nll_gap"]) <= NLL_TOLERANCE
    )
    return {
        "minutes": float(history["epoch_seconds"].sum() / 60),
        "epochs": int(len(history)),
        "kl_per_latent": metrics["kl_per_latent"],
        "surviving_latents": metrics["surviving_latents"],
        "n_surviving": n_surviving,
        "effective_dimension": metrics["effective_dimension"],
        "effective_dimension_snr": metrics["effective_dimension_snr"],
        "nll_gap": metrics["nll_gap"],
        "val_nll_gap_rf": float(last["val_nll"] - last["val_exact_nll_rf"]),
        "branch": "" if pd.isna(last.get("note")) else str(last["note"]),  # what was kept
        "r2_alpha": metrics.get("r2_alpha"),
        "r2_log10_D": metrics["r2_log10_D"],
        "expected_latents": expected,
        "minimal": bool(minimal),
    }


def table(runs: list[dict]) -> str:
    """The study as a Markdown table (docs/training-recipes.md)."""
    lines = [
        "| process | seed | minutes | KL per latent (nat) | surviving | eff. dim | NLL gap "
        "| R^2 alpha / log10 D | minimal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        kl = ", ".join(f"{v:.2g}" for v in run["kl_per_latent"])
        r2_alpha = "-" if run["r2_alpha"] is None else f"{run['r2_alpha']:.3f}"
        lines.append(
            f"| {run['process']} | {run['seed']} | {run['minutes']:.1f} | {kl} "
            f"| {run['n_surviving']} | {run['effective_dimension']} | {run['nll_gap']:+.4f} "
            f"| {r2_alpha} / {run['r2_log10_D']:.3f} | {'yes' if run['minimal'] else 'no'} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", nargs="+", default=list(PARAMETERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--recipe", default="quick", help="preset name or plan JSON file")
    parser.add_argument("--workdir", type=Path, default=Path("study"))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    name = Path(args.recipe).stem if args.recipe not in PRESETS else args.recipe
    output = args.output or Path("docs/results") / f"seed_study_{name}.json"
    previous = json.loads(output.read_text())["runs"] if output.exists() else []
    runs = {(r["process"], r["seed"]): r for r in previous}
    # Seed by seed, so that a study stopped early has every process.
    for seed in args.seeds:
        for process in args.processes:
            run_dir, commands = train_run(process, seed, args.recipe, args.workdir)
            runs[(process, seed)] = {
                "process": process,
                "seed": seed,
                "data_seed": seed + DATA_SEED_OFFSET,
                "test_seed": seed + TEST_SEED_OFFSET,
                "commands": commands,
                **judge(process, seed, run_dir),
            }
            ordered = [runs[key] for key in sorted(runs)]
            document = {
                "recipe": args.recipe,
                "test_set": "paper-test grid, 2 per cell, inside the training range",
                "nll_tolerance": NLL_TOLERANCE,
                "minimal_runs": int(sum(r["minimal"] for r in ordered)),
                "runs": ordered,
            }
            with io.atomic_write(output) as tmp:
                tmp.write_text(json.dumps(document, indent=2, default=_plain) + "\n")
            print(table(ordered), flush=True)


def _plain(value):
    """numpy scalars and arrays as JSON."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


if __name__ == "__main__":
    main()
