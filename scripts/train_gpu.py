"""Train several minrep models side by side on one GPU within a wall-clock budget.

This is how the shipped models were trained (docs/REPRODUCTION.md). For each process it
simulates the `paper` set (seeded), then runs one training per (process, plan) as separate
processes sharing the GPU. The network is small, so one training leaves the GPU mostly idle and
several run at nearly the speed of one. After two epochs the driver projects the finishing time;
if the plans do not fit the budget it restarts them with every stage shortened by the same
factor (recorded in each run's config.json). At the deadline unfinished runs are stopped: their
checkpoints/last.ckpt resumes them anywhere with `minrep train DATA -o RUN --resume`.

    python scripts/train_gpu.py -o runs/gpu --budget 540
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from minrep import datasets
from minrep.io import save_npz
from minrep.schedule import PRESETS, GeometricRamp, LinearRamp, Plan, Stage

SEEDS = {"bm": 11, "fbm": 12, "sbm": 13}

PLANS = {
    "paper": PRESETS["paper"],
    # Converge the reconstruction, then raise beta smoothly (no learning-rate restarts, which
    # knocked the decoder off on 2 cores) from far below the paper's first value, and hold the
    # paper's final beta long enough for redundant latents to die.
    "anneal": Plan(
        [
            Stage(16, 0.0, 1e-3, "one-cycle"),
            Stage(48, GeometricRamp(1e-5, 4e-3, 48), 2e-4, "constant"),
            Stage(32, 4e-3, 2e-4, "one-cycle"),
        ]
    ),
}


def scaled(plan: Plan, factor: float) -> Plan:
    """Every stage (and ramp) shortened by ``factor``, at least one epoch each."""
    stages = []
    for stage in plan.stages:
        epochs = max(1, round(stage.epochs * factor))
        beta = stage.beta
        if isinstance(beta, GeometricRamp | LinearRamp):
            beta = dataclasses.replace(beta, epochs=epochs)
        stages.append(dataclasses.replace(stage, epochs=epochs, beta=beta))
    return Plan(stages)


def worker(data: str, run_dir: str, plan_json: str, seed: int, threads: int) -> None:
    import torch

    from minrep.train import TrainConfig, keep_freed_memory, train

    torch.set_num_threads(threads)
    keep_freed_memory()  # as `minrep train` does: this process only trains
    config = TrainConfig(plan=Plan.from_dict(json.loads(plan_json)), seed=seed)
    train(data, run_dir, config, progress=False)


def history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    with open(path) as handle:
        return list(csv.DictReader(handle))


def pack(out: Path, names, into: Path, finished: set) -> None:
    """One .tar.gz per run in ``into`` (atomically): its files and log, without TensorBoard
    events, and without the resume checkpoint once the run has finished."""
    for name in names:
        if not (out / name).is_dir():
            continue
        tmp = into / f"{name}.tgz.tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            for path in sorted((out / name).rglob("*")):
                skip = "tensorboard" in path.parts or (
                    name in finished and path.parent.name == "checkpoints"
                )
                if path.is_file() and not skip:
                    tar.add(path, arcname=str(path.relative_to(out)))
            if (out / f"{name}.log").is_file():
                tar.add(out / f"{name}.log", arcname=f"{name}/train.log")
        os.replace(tmp, into / f"{name}.tgz")


def launch(jobs: dict, out: Path, factor: float, threads: int) -> dict:
    running = {}
    for name, (data, plan, seed) in jobs.items():
        run_dir = out / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        plan = scaled(plan, factor)
        log = open(out / f"{name}.log", "w")
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            data,
            str(run_dir),
            json.dumps(plan.to_dict()),
            str(seed),
            str(threads),
        ]
        running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), plan)
    return running


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=540, help="seconds for everything")
    parser.add_argument("--processes", default="bm,fbm,sbm")
    parser.add_argument("--plans", default="paper,anneal")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per training")
    parser.add_argument("--preset", default="paper", help="dataset preset (`small` to try)")
    parser.add_argument(
        "--pack", type=Path, help="write <run>.tgz here every minute and at the end"
    )
    args = parser.parse_args()
    began = time.perf_counter()
    deadline = began + args.budget
    args.out.mkdir(parents=True, exist_ok=True)

    jobs = {}
    for process in args.processes.split(","):
        path = args.out / f"{process}-{args.preset}.npz"
        if not path.exists():
            data = datasets.make_dataset(process, args.preset, seed=SEEDS[process])
            save_npz(data, path)
        for plan in args.plans.split(","):
            jobs[f"{process}-{plan}"] = (str(path), PLANS[plan], SEEDS[process])
    print(f"data ready after {time.perf_counter() - began:.0f} s", flush=True)

    started, factor = time.perf_counter(), 1.0
    running = launch(jobs, args.out, factor, args.threads)
    checked, finished, packed = False, set(), time.perf_counter()
    while running:
        time.sleep(3)
        now = time.perf_counter()
        for name, (proc, _plan) in list(running.items()):
            if proc.poll() is not None:
                rows = history(args.out / name)
                print(f"{name}: exit {proc.returncode} after {len(rows)} epochs", flush=True)
                if proc.returncode == 0:
                    finished.add(name)
                del running[name]
        if args.pack and now - packed > 60:
            pack(args.out, jobs, args.pack, finished)
            packed = now
        if not checked and running:
            rows = {name: history(args.out / name) for name in running}
            if all(len(r) >= 2 for r in rows.values()):
                checked = True
                per_epoch = max(
                    float(r[1]["elapsed_seconds"]) - float(r[0]["elapsed_seconds"])
                    for r in rows.values()
                )
                first = max(float(r[0]["elapsed_seconds"]) for r in rows.values())
                longest = max(plan.epochs for _, plan in running.values())
                projected = started + first + (longest - 1) * per_epoch
                print(
                    f"{per_epoch:.2f} s per epoch with {len(running)} runs; first epoch "
                    f"{first:.1f} s; projected end {projected - began:.0f} s of "
                    f"{args.budget:.0f}",
                    flush=True,
                )
                if projected > deadline - 10:
                    for proc, _ in running.values():
                        proc.kill()
                        proc.wait()
                    available = deadline - 10 - time.perf_counter() - first
                    factor = min(1.0, available / (longest * per_epoch))
                    print(f"restarting with every stage x {factor:.3f}", flush=True)
                    started = time.perf_counter()
                    running = launch(jobs, args.out, factor, args.threads)
        if now > deadline:
            for name, (proc, _) in running.items():
                proc.kill()
                print(
                    f"{name}: stopped at the deadline after {len(history(args.out / name))} "
                    f"epochs (resume from checkpoints/last.ckpt)",
                    flush=True,
                )
            break
    summary = {}
    for name in jobs:
        rows = history(args.out / name)
        summary[name] = {"factor": factor, "epochs": len(rows), "last": rows[-1] if rows else None}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if args.pack:
        pack(args.out, jobs, args.pack, finished)
        shutil.copy(args.out / "summary.json", args.pack / "summary.json")
    print(json.dumps(summary, indent=1), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
