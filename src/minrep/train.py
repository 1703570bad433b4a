"""Training: beta schedules, the training plan, the Lightning module, and :func:`train`.

A run directory holds ``config.json`` (model, data and training settings), ``model.safetensors``
(the final model), ``history.csv`` (one row per epoch), ``checkpoints/last.ckpt`` (resume
state, replaced atomically every epoch), ``stages/`` (the model at the end of each stage) and
``figures/``.

The plan is a list of stages, each with its own beta schedule and learning-rate policy. The
paper trains with beta = 0 until the reconstruction converges, then anneals beta upwards
monotonically, restarting a one-cycle learning-rate policy at every stage.
"""

from __future__ import annotations

import csv
import ctypes
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar

from minrep import MinrepError, checkpoint, io, processes
from minrep.model import SURVIVAL_KL, VAE, ModelConfig, rms_scale, surviving


class TrainingError(MinrepError, RuntimeError):
    """Training cannot start or cannot go on (bad input, non-finite loss, ...)."""


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the system.

    By default every freed block above 128 kB (most activations: 13 MB at batch 256) goes back to
    the kernel and comes back zeroed, page by page, at the next step: 20-30k page faults and a
    quarter of each CPU training step spent in the kernel (half with two DDP processes).
    A training step allocates the same tensors every time, so keeping them costs no memory
    beyond the step's own. Measured in benchmarks/train_throughput.py. Returns False (and
    changes nothing) where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(
        (
            mallopt(m_mmap_threshold, 32 << 20),  # glibc's largest allowed value (64-bit)
            mallopt(m_trim_threshold, 1 << 30),
            mallopt(m_top_pad, 64 << 20),
        )
    )


# ---------------------------------------------------------------------------------------------
# Beta schedules: beta as a function of the (fractional) epoch since the stage began.


@dataclass(frozen=True)
class Constant:
    value: float

    def __call__(self, epoch: float) -> float:
        return self.value


@dataclass(frozen=True)
class LinearRamp:
    """From ``start`` to ``end`` linearly over ``epochs``, then held at ``end``."""

    start: float
    end: float
    epochs: float

    def __call__(self, epoch: float) -> float:
        return self.start + (self.end - self.start) * min(max(epoch / self.epochs, 0.0), 1.0)


@dataclass(frozen=True)
class GeometricRamp:
    """From ``start`` to ``end`` (both > 0) evenly in log beta over ``epochs``, then held."""

    start: float
    end: float
    epochs: float

    def __call__(self, epoch: float) -> float:
        fraction = min(max(epoch / self.epochs, 0.0), 1.0)
        return self.start * (self.end / self.start) ** fraction


SCHEDULES = {"constant": Constant, "linear": LinearRamp, "geometric": GeometricRamp}


def schedule_to_dict(schedule) -> dict:
    kinds = [k for k, v in SCHEDULES.items() if isinstance(schedule, v)]
    if not kinds:
        raise TypeError(
            f"{type(schedule).__name__} is not a registered beta schedule "
            f"({', '.join(SCHEDULES)}): add it to SCHEDULES"
        )
    return {"kind": kinds[0], **dataclasses.asdict(schedule)}


def schedule_from_dict(values: dict):
    values = dict(values)
    return SCHEDULES[values.pop("kind")](**values)


# ---------------------------------------------------------------------------------------------
# Learning rate: a one-cycle policy per stage (Smith 2018, with fastai's defaults), or constant.


def one_cycle(fraction: float, peak: float) -> tuple[float, float]:
    """Learning rate and Adam beta1 at ``fraction`` (0..1) of a one-cycle stage: cosine warm-up
    from peak/25 to the peak over the first quarter, cosine decay to peak/1e5; beta1 goes
    0.95 -> 0.85 -> 0.95 the other way round."""
    warm = 0.25

    def cosine(a, b, x):
        return b + (a - b) * (1 + math.cos(math.pi * x)) / 2

    if fraction < warm:
        x = fraction / warm
        return cosine(peak / 25, peak, x), cosine(0.95, 0.85, x)
    x = (fraction - warm) / (1 - warm)
    return cosine(peak, peak / 1e5, x), cosine(0.85, 0.95, x)


@dataclass
class Stage:
    """``epochs`` epochs with a beta schedule (epochs counted from the stage's start) and a
    learning-rate policy: ``one-cycle`` up to ``lr`` or ``constant`` at ``lr``."""

    epochs: int
    beta: Constant | LinearRamp | GeometricRamp = Constant(0.0)
    lr: float = 1e-3
    policy: str = "one-cycle"

    def __post_init__(self):
        if isinstance(self.beta, int | float):
            self.beta = Constant(float(self.beta))
        if self.policy not in ("one-cycle", "constant"):
            raise ValueError(f"unknown learning-rate policy {self.policy!r}")
        if self.epochs < 1:
            raise ValueError("a stage needs at least one epoch")


@dataclass
class Plan:
    """The whole schedule: stages run one after the other."""

    stages: list[Stage]

    @property
    def epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    def locate(self, epoch: float) -> tuple[int, float]:
        """Stage index and epochs since that stage began, for a fractional global epoch."""
        start = 0
        for i, stage in enumerate(self.stages):
            if epoch < start + stage.epochs or i == len(self.stages) - 1:
                return i, epoch - start
            start += stage.epochs
        raise AssertionError("unreachable")

    def stage_ends(self) -> list[int]:
        """Epoch count at the end of each stage."""
        return list(np.cumsum([s.epochs for s in self.stages]))

    def at(self, epoch: float) -> dict[str, float]:
        """beta, learning rate and Adam beta1 at a fractional epoch."""
        i, local = self.locate(epoch)
        stage = self.stages[i]
        if stage.policy == "one-cycle":
            lr, momentum = one_cycle(min(local / stage.epochs, 1.0), stage.lr)
        else:
            lr, momentum = stage.lr, 0.9
        return {"stage": i, "beta": stage.beta(local), "lr": lr, "momentum": momentum}

    def to_dict(self) -> dict:
        return {
            "stages": [
                {
                    "epochs": s.epochs,
                    "beta": schedule_to_dict(s.beta),
                    "lr": s.lr,
                    "policy": s.policy,
                }
                for s in self.stages
            ]
        }

    @classmethod
    def from_dict(cls, values: dict) -> Plan:
        return cls(
            [
                Stage(s["epochs"], schedule_from_dict(s["beta"]), s["lr"], s["policy"])
                for s in values["stages"]
            ]
        )


PRESETS = {
    # Table/appendix of the paper: 64 epochs at beta = 0, then 16 epochs at each beta, a
    # one-cycle policy per stage (144 epochs; meant for a GPU).
    "paper": Plan([Stage(64, 0.0)] + [Stage(16, b) for b in (1e-4, 6e-4, 1e-3, 2e-3, 4e-3)]),
    # For 2 CPU cores: the paper's plan with every stage shortened about 5-fold (13 epochs at
    # beta = 0, 3 at each beta; 28 epochs, ~25 min on the `paper` FBM set). With minrep's
    # scale-equivariant network this ended with exactly the minimal latents for BM and FBM
    # (docs/training-recipes.md); SBM needs a longer hold at the last beta (--init, --plan).
    "quick": Plan([Stage(13, 0.0)] + [Stage(3, b) for b in (1e-4, 6e-4, 1e-3, 2e-3, 4e-3)]),
}


# ---------------------------------------------------------------------------------------------
# Data: the whole set stays in memory as one tensor; batches are slices of it.


class Batches(torch.utils.data.Dataset):
    """Item i is this process's i-th batch. Batches are slices of a permutation drawn afresh
    each epoch (``shuffle``) from ``seed`` and the epoch, the same on every process; process
    ``rank`` of ``world`` takes batches rank, rank + world, ... For training (``pad``) every
    process gets the same number of batches (data-parallel steps must pair up), wrapping
    around to the first batches; for validation nothing is counted twice."""

    def __init__(
        self, data: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0, pad: bool = True
    ):
        self.data, self.batch_size, self.shuffle, self.seed = data, batch_size, shuffle, seed
        self.pad = pad
        self.epoch, self.rank, self.world = 0, 0, 1
        self._order_epoch, self._order = None, None

    def shard(self, rank: int, world: int) -> None:
        """Make this the dataset of process ``rank`` of ``world``; unpadded sets get smaller
        batches if needed so that every process has at least one."""
        self.rank, self.world = rank, world
        if not self.pad:
            self.batch_size = min(self.batch_size, max(1, len(self.data) // world))

    @property
    def n_batches(self) -> int:
        """Batches in the whole set (all processes together)."""
        return math.ceil(len(self.data) / self.batch_size)

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.n_batches / self.world)
        return len(range(self.rank, self.n_batches, self.world))

    def _permutation(self) -> torch.Tensor | None:
        if not self.shuffle:
            return None
        if self._order_epoch != self.epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            self._order = torch.randperm(len(self.data), generator=generator)
            self._order_epoch = self.epoch
        return self._order

    def __getitem__(self, i: int) -> torch.Tensor:
        if i >= len(self):
            raise IndexError(i)
        j = (self.rank + i * self.world) % self.n_batches
        sl = slice(j * self.batch_size, (j + 1) * self.batch_size)
        order = self._permutation()
        return self.data[sl] if order is None else self.data[order[sl]]


def split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of ``n`` trajectories."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# ---------------------------------------------------------------------------------------------
# The Lightning module


class MinrepModule(pl.LightningModule):
    """Wraps :class:`minrep.model.VAE` with the plan: sets beta, learning rate and momentum at
    every batch, and sums the training loss and the held-out NLL and KL per latent over all
    processes at every epoch."""

    def __init__(self, config: ModelConfig, plan: Plan, datasets: list[Batches], seed: int = 0):
        super().__init__()
        self.model = VAE(config)
        self.plan = plan
        self.datasets = datasets  # training and validation batches, sharded in setup()
        self.seed = seed
        self.follow_plan = True  # False while the learning-rate finder sweeps the rate
        self.lr = plan.stages[0].lr
        self.beta = 0.0
        self._train_sums = torch.zeros(2)
        self._val_sums = torch.zeros(3 + config.latent_dim)
        self.val_metrics: dict = {}
        self.train_loss = float("nan")

    def setup(self, stage: str) -> None:
        # Before Lightning counts the batches: each process takes its share of the data and
        # draws its own reparameterisation noise.
        for dataset in self.datasets:
            dataset.shard(self.global_rank, self.trainer.world_size)
        torch.manual_seed(self.seed * 1_000 + self.global_rank)

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)

    def training_step(self, batch: torch.Tensor, batch_idx: int):
        epoch = self.current_epoch + batch_idx / self.trainer.num_training_batches
        position = self.plan.at(epoch)
        self.beta = position["beta"] if self.follow_plan else self.plan.stages[0].beta(0.0)
        if self.follow_plan:
            for group in self.optimizers().optimizer.param_groups:
                group["lr"] = position["lr"]
                group["betas"] = (position["momentum"], group["betas"][1])
        loss, _ = self.model.loss(batch, self.beta)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"non-finite loss ({loss.item()}) at epoch {self.current_epoch + 1}, batch "
                f"{batch_idx + 1} (beta {self.beta:.3g}, learning rate {position['lr']:.3g}); "
                f"training stopped and the last good checkpoint is kept"
            )
        self._train_sums += torch.stack(
            [loss.detach().cpu() * len(batch), torch.tensor(float(len(batch)))]
        )
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("beta", self.beta, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_train_epoch_start(self):
        self.datasets[0].epoch = self.current_epoch
        self._train_sums.zero_()

    def on_train_epoch_end(self):
        sums = self.trainer.strategy.reduce(self._train_sums.to(self.device), reduce_op="sum")
        self.train_loss = (sums[0] / sums[1]).item()

    def on_validation_epoch_start(self):
        self._val_sums = torch.zeros(3 + self.model.config.latent_dim, device=self.device)

    def validation_step(self, batch: torch.Tensor, batch_idx: int):
        out = self.model(batch, sample=False)  # the deterministic code: z = posterior mean
        kl = out["kl"].sum(dim=0)
        nll = out["nll"].sum()
        self._val_sums += torch.cat(
            [
                batch.new_tensor([len(batch)]),
                nll[None],
                (out["nll"] + self.beta * out["kl"].sum(1)).sum()[None],
                kl,
            ]
        )

    def on_validation_epoch_end(self):
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        count = sums[0]
        kl = (sums[3:] / count).tolist()
        self.val_metrics = {
            "val_nll": (sums[1] / count).item(),
            "val_loss": (sums[2] / count).item(),
            "kl_per_latent": kl,
        }
        self.log("val_nll", self.val_metrics["val_nll"], prog_bar=True, sync_dist=False)
        self.log("survivors", float(len(surviving(kl))), prog_bar=True, sync_dist=False)


# ---------------------------------------------------------------------------------------------
# The run directory: history, checkpoints, exported models, figures


HISTORY = "history.csv"


def _write_history(run_dir: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with io.atomic_write(run_dir / HISTORY) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


class RunDirectory(Callback):
    """After every epoch: the resume checkpoint, the exported model at the end of each stage,
    and a history row, in an order that survives a kill at any point (the checkpoint replaces
    the last one only after everything it implies is on disk)."""

    def __init__(self, run_dir: Path, settings: dict, exact_nll: dict[str, float] | None):
        self.run_dir = run_dir
        self.settings = settings
        self.exact_nll = exact_nll or {}
        self.rows: list[dict] = []
        self.started = time.perf_counter()
        self.offset = 0.0  # seconds spent before a resume

    def state_dict(self) -> dict:
        return {"rows": self.rows, "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])
        self.offset = self.rows[-1]["seconds"] if self.rows else 0.0
        torch.set_rng_state(state["torch_rng"])

    def on_train_epoch_end(self, trainer: pl.Trainer, module: MinrepModule) -> None:
        epoch = trainer.current_epoch + 1
        position = module.plan.at(epoch - 1e-9)
        kl = module.val_metrics["kl_per_latent"]
        row = {
            "epoch": epoch,
            "stage": position["stage"] + 1,
            "beta": module.beta,
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "train_loss": module.train_loss,
            "val_loss": module.val_metrics["val_loss"],
            "val_nll": module.val_metrics["val_nll"],
            "val_exact_nll": self.exact_nll.get("all", float("nan")),
            "val_exact_nll_rf": self.exact_nll.get("rf", float("nan")),
            "val_kl": sum(kl),
            **{f"kl_{i}": v for i, v in enumerate(kl)},
            "surviving": " ".join(map(str, surviving(kl))),
            "n_surviving": len(surviving(kl)),
            "seconds": self.offset + time.perf_counter() - self.started,
        }
        # Plain Python values only: the checkpoint is loaded back with weights_only=True.
        self.rows.append(
            {
                k: v
                if isinstance(v, str)
                else float(v)
                if isinstance(v, float)
                else int(v)
                if isinstance(v, int)
                else float(v)
                for k, v in row.items()
            }
        )
        ckpt = self.run_dir / "checkpoints" / "last.ckpt"
        tmp = ckpt.with_suffix(".ckpt.tmp")
        # Full state (optimizer too); every process calls it, only rank 0 writes.
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            if epoch in module.plan.stage_ends():
                stage_dir = self.run_dir / "stages" / f"stage-{position['stage'] + 1}"
                checkpoint.save_model(module.model, stage_dir, {**self.settings, "epoch": epoch})
            _write_history(self.run_dir, self.rows)
            os.replace(tmp, ckpt)
        trainer.strategy.barrier()


def plot_history(run_dir: Path) -> Path | None:
    """Per-latent KL and held-out NLL over training, ``figures/training.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return None
    history = pd.read_csv(path)
    kl_columns = [c for c in history.columns if c.startswith("kl_")]
    fig, (ax_kl, ax_nll) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for column in kl_columns:
        ax_kl.plot(history["epoch"], history[column], marker=".", label=f"z{column[3:]}")
    ax_kl.axhline(SURVIVAL_KL, color="grey", ls="--", lw=1, label="survival threshold")
    ax_kl.set(yscale="log", xlabel="epoch", ylabel="KL to prior (nat)", title="KL per latent")
    ax_kl.legend(fontsize=8, ncol=2)
    beta = ax_kl.twinx()
    beta.plot(history["epoch"], history["beta"], color="black", lw=1, alpha=0.4)
    beta.set_ylabel("beta")
    ax_nll.plot(history["epoch"], history["val_nll"], marker=".", label="held-out NLL")
    if history["val_exact_nll"].notna().all():
        exact = history["val_exact_nll"].iloc[0]
        ax_nll.axhline(exact, color="k", ls="--", label="exact NLL")
        # The first epochs sit far above the limit: show the approach to it.
        top = min(history["val_nll"].max(), exact + 0.3)
        ax_nll.set_ylim(min(history["val_nll"].min(), exact) - 0.02, top + 0.02)
    ax_nll.set(xlabel="epoch", ylabel="nat per displacement", title="Held-out NLL")
    ax_nll.legend(fontsize=8)
    out = Path(run_dir) / "figures" / "training.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_write(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------
# Entry point


@dataclass
class TrainResult:
    run_dir: Path
    model: VAE
    history: list[dict] = field(default_factory=list)
    primary: bool = True  # False in the other processes of a data-parallel run


def check_data(data: io.Trajectories, config: ModelConfig, source="data") -> None:
    """Refuse data the model cannot be trained on, before any training starts."""
    if data.is_ragged:
        raise TrainingError(
            f"{source}: training needs trajectories of one length; this set has lengths "
            f"{data.step_counts().min()}..{data.step_counts().max()}"
        )
    if data.dim != config.dim:
        raise TrainingError(f"{source}: data have dim {data.dim}, the model expects {config.dim}")
    io.check_min_steps(data, config.min_steps, source)
    if len(data) < 10:
        raise TrainingError(f"{source}: {len(data)} trajectories are too few to train on")


def validation_exact_nll(data: io.Trajectories, start: int) -> dict[str, float] | None:
    """Mean exact NLL of a labelled simulated set, steps ``start ..``: conditioned on all
    earlier steps (``all``, the floor of any model) and on the last ``start`` (``rf``, the
    floor of a model with that receptive field). None when labels are missing."""
    process = data.process
    if process not in processes.PROCESSES or data.alpha is None or data.D is None:
        return None
    args = (data.displacements, process, data.alpha, data.D)
    return {
        "all": float(processes.exact_nll(*args, start=start).mean()),
        "rf": float(processes.exact_nll(*args, start=start, memory=start).mean()),
    }


def train(
    data,
    run_dir,
    *,
    preset: str = "quick",
    plan: Plan | None = None,
    model_config: ModelConfig | None = None,
    batch_size: int = 256,
    val_fraction: float = 0.2,
    seed: int = 0,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    max_epochs: int | None = None,
    resume: bool = False,
    find_lr: bool = False,
    lr: float | None = None,
    init=None,
    progress: bool = True,
) -> TrainResult:
    """Train a model on ``data`` (a :class:`minrep.io.Trajectories` or a dataset path) into the
    run directory ``run_dir``; ``resume`` continues a run from its last checkpoint. ``lr`` sets
    the first stage's peak learning rate and scales the other stages' by the same factor.
    ``init`` (a model directory or shipped name) starts from that model's weights and
    configuration instead of a fresh network, e.g. to anneal a trained model further."""
    run_dir = Path(run_dir)
    keep_freed_memory()
    source = str(data) if not isinstance(data, io.Trajectories) else "data"
    if not isinstance(data, io.Trajectories):
        data = io.load_npz(data)
    if max_epochs is not None and max_epochs < 1:
        raise TrainingError(f"max_epochs must be >= 1, got {max_epochs}")
    config_path = run_dir / checkpoint.CONFIG
    saved = None
    if resume:
        if not (run_dir / "checkpoints" / "last.ckpt").is_file() or not config_path.is_file():
            raise TrainingError(f"{run_dir}: nothing to resume (no checkpoints/last.ckpt)")
        saved = json.loads(config_path.read_text())
        model_config = ModelConfig.from_dict(saved["model"])
        plan = Plan.from_dict(saved["training"]["plan"])
        preset = saved["training"]["preset"]
        batch_size, val_fraction, seed = (
            saved["training"][k] for k in ("batch_size", "val_fraction", "seed")
        )
    elif (run_dir / "checkpoints" / "last.ckpt").exists():
        raise TrainingError(f"{run_dir} holds a run already: pass resume (--resume) or a new path")
    elif plan is None and preset not in PRESETS:
        raise TrainingError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    plan = plan or PRESETS[preset]
    start = None
    if init is not None and saved is None:
        if model_config is not None:
            raise TrainingError("give either a model configuration or a model to start from")
        start = checkpoint.load_model(init)
        model_config = start.config
    if lr is not None and saved is None:
        factor = lr / plan.stages[0].lr
        plan = Plan([dataclasses.replace(s, lr=s.lr * factor) for s in plan.stages])
    # minrep's default network works on displacements of order one (see minrep.model).
    model_config = model_config or ModelConfig(dim=data.dim, scale_equivariant=True)
    check_data(data, model_config, source)

    train_idx, val_idx = split(len(data), val_fraction, seed)
    if len(val_idx) == 0:
        raise TrainingError(f"{source}: {len(data)} trajectories leave no validation set")
    if len(train_idx) < batch_size // 4:
        raise TrainingError(
            f"{source}: {len(train_idx)} training trajectories are too few for batches of "
            f"{batch_size}"
        )
    data_settings = {
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "n_steps": data.n_steps,
        "dim": data.dim,
        "process": data.process,
    }
    if saved is not None:
        changed = [k for k, v in data_settings.items() if saved["data"].get(k) != v]
        if changed:
            raise TrainingError(
                f"{source}: not the data of {run_dir} ({', '.join(changed)} differ); resume "
                f"with the same dataset"
            )
    tensor = torch.from_numpy(data.displacements)
    train_set, val_set = tensor[train_idx], tensor[val_idx]
    if saved is None and start is None:
        log_scale = rms_scale(train_set).log().mean().item()
        model_config = dataclasses.replace(model_config, log_scale_mean=log_scale)
    pl.seed_everything(seed, workers=True, verbose=False)
    exact = validation_exact_nll(data.subset(val_idx), model_config.receptive_field)
    settings = {
        "training": {
            "plan": plan.to_dict(),
            "preset": preset if plan is PRESETS.get(preset) or saved is not None else None,
            "batch_size": batch_size,
            "val_fraction": val_fraction,
            "seed": seed,
            "max_epochs": max_epochs,
            "init": None if start is None else str(checkpoint.resolve(init)),
        },
        "data": {"source": source, **data_settings, "val_exact_nll": exact},
    }
    datasets = [
        Batches(train_set, batch_size, shuffle=True, seed=seed),
        Batches(val_set, 1024, shuffle=False, pad=False),
    ]
    module = MinrepModule(model_config, plan, datasets, seed)
    if start is not None:
        module.model.load_state_dict(start.state_dict())
    if saved is None:  # the settings from the start; weights only once trained
        checkpoint.save_config(module.model.config, run_dir, settings)

    loader = torch.utils.data.DataLoader(datasets[0], batch_size=None)
    val_loader = torch.utils.data.DataLoader(datasets[1], batch_size=None)
    run_files = RunDirectory(run_dir, settings, exact)
    callbacks: list[Callback] = [run_files]
    if progress:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    logger = False
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(run_dir, name="tensorboard")
    except ImportError:
        pass
    strategy = "ddp" if (devices not in (1, "1") or num_nodes > 1) else "auto"
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        max_epochs=min(plan.epochs, max_epochs or plan.epochs),
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=run_dir,
        use_distributed_sampler=False,  # Batches shards the data itself
        deterministic=False,
    )
    if find_lr:
        return _find_lr(trainer, module, loader, run_dir)
    ckpt = run_dir / "checkpoints" / "last.ckpt" if saved is not None else None
    trainer.fit(module, loader, val_loader, ckpt_path=ckpt, weights_only=True)
    if trainer.is_global_zero:
        checkpoint.save_model(
            module.model, run_dir, {**settings, "epochs_done": trainer.current_epoch}
        )
        plot_history(run_dir)
    return TrainResult(run_dir, module.model.eval(), run_files.rows, trainer.is_global_zero)


def _find_lr(trainer, module, loader, run_dir: Path) -> TrainResult:
    """Lightning's learning-rate finder at the first stage's beta; plot in ``figures/``."""
    from lightning.pytorch.tuner import Tuner

    module.follow_plan = False
    finder = Tuner(trainer).lr_find(
        module,
        train_dataloaders=loader,
        min_lr=1e-6,
        max_lr=1e-1,
        num_training=100,
        update_attr=False,
        early_stop_threshold=None,  # the first losses are large and noisy: no early stop
    )
    figure = finder.plot(suggest=True)
    out = run_dir / "figures" / "lr_find.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_write(out, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    suggestion = finder.suggestion()
    if suggestion is None:
        raise TrainingError("the learning-rate finder found no clear minimum; see its plot")
    (run_dir / "lr_find.json").write_text(json.dumps({"suggestion": suggestion}) + "\n")
    return TrainResult(run_dir, module.model, [{"lr_suggestion": suggestion}])
