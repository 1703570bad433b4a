"""Training: the training configuration, the Lightning module, the run directory and
:func:`train`. The plan it follows (beta schedules, learning-rate policy, stages, presets) is in
:mod:`minrep.schedule`.

A run directory holds ``config.json`` (model, data and training settings), ``model.safetensors``
(the final model), ``history.csv`` (one row per epoch, epochs counted from 1),
``checkpoints/last.ckpt`` (resume state, replaced atomically every epoch), ``stages/`` (the
model at the end of each stage) and ``figures/``.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar

from minrep import MinrepError, checkpoint, io, processes
from minrep.cudagraph import GradientGraph
from minrep.dimension import EffectiveDimension, LatentMoments, effective_dimension_of_moments
from minrep.encode import check_scale
from minrep.model import (
    VAE,
    ModelConfig,
    forward_batch_size,
    full_precision,
    rms_scale,
    surviving,
)
from minrep.progress import interactive
from minrep.schedule import PRESETS, Plan


class TrainingError(MinrepError, RuntimeError):
    """Training cannot start or cannot go on (bad input, non-finite loss, ...)."""


class TrainingInterrupted(MinrepError):
    """Training stopped by SIGINT or SIGTERM before its last epoch: the run directory holds
    the checkpoint of the last finished epoch (no final model), and ``--resume`` continues
    it. ``signum``: the signal; ``exit_code``: what a command stopped by it exits with,
    128 + signum (130 for SIGINT, 143 for SIGTERM); ``resumable``: whether an epoch had
    finished (else the run starts again from nothing)."""

    def __init__(self, message: str, signum: int, run_dir: Path, resumable: bool):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
        self.run_dir = run_dir
        self.resumable = resumable


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the system.

    By default every freed block above 128 kB (most activations: 13 MB at batch 256) goes back to
    the kernel and comes back zeroed, page by page, at the next step: 20-30k page faults and a
    quarter of each CPU training step spent in the kernel (half with two DDP processes).
    A training step allocates the same tensors every time, so keeping them costs no memory
    beyond the step's own. Measured in benchmarks/train_throughput.py.

    This changes the allocator of the whole process, so :func:`train` never calls it: the
    ``minrep train`` command does, and a script that only trains may opt in the same way.
    Returns False (and changes nothing) where the C library is not glibc."""
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
# The training configuration


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


PRECISIONS = ("32-true", "bf16-mixed")  # Lightning's names

# For each field: a test of its value and what the value must be, for the error message.
_FIELD_CHECKS = {
    "preset": (lambda v: v is None or isinstance(v, str), "a preset name or null"),
    "plan": (lambda v: v is None or isinstance(v, Plan), "a Plan or null"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "val_fraction": (lambda v: _is_number(v) and 0 < v < 1, "a number between 0 and 1"),
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "lr": (lambda v: v is None or (_is_number(v) and v > 0), "a number > 0 or null"),
    "init": (lambda v: v is None or isinstance(v, str), "a model path or name, or null"),
    "max_epochs": (lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 or null"),
    "accelerator": (lambda v: isinstance(v, str), "a string (auto, cpu, gpu, ...)"),
    "devices": (
        lambda v: (_is_int(v) and (v >= 1 or v == -1)) or isinstance(v, str),
        "a count (-1: all) or a string",
    ),
    "num_nodes": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "crop_min_steps": (lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 or null"),
    "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "cuda_graph": (lambda v: isinstance(v, bool), "true or false"),
}

# Fixed when a run starts; a resumed run keeps its own. The other fields (when to stop, on
# which hardware) are the caller's on every call.
RUN_FIELDS = (
    "preset",
    "plan",
    "batch_size",
    "val_fraction",
    "seed",
    "lr",
    "init",
    "crop_min_steps",
)


@dataclass
class TrainConfig:
    """How a model is trained, saved as the ``training`` section of a run's ``config.json``.

    ``plan`` (a :class:`minrep.schedule.Plan`) or else the preset named by ``preset``
    (:data:`minrep.schedule.PRESETS`). ``lr`` sets the first stage's peak learning rate and
    scales the other stages' by the same factor. ``init`` (a model directory or shipped name)
    starts from that model's weights and configuration instead of a fresh network, e.g. to
    anneal a trained model further. ``max_epochs`` stops early whatever the plan (a resumed
    run goes on to the end of its plan). ``accelerator``, ``devices`` and ``num_nodes`` are
    Lightning's; more than one device or node trains data-parallel (DDP), ``batch_size`` per
    device. ``crop_min_steps`` trains on prefixes of random length (:class:`Batches`) from
    that many displacements to the whole; None: whole trajectories, except for a network
    with the ``"whole"`` decoder, whose runs then record :data:`WHOLE_DECODER_CROP`.
    ``precision`` ``"bf16-mixed"`` runs the convolutions and matrix products of training in
    bfloat16 (Lightning's autocast), the head's last layer, the likelihood, the KL, the
    optimiser and all of validation in float32 (:func:`minrep.model.full_precision`).
    On a GPU the data stay on the device. Validation runs in batches of
    :func:`minrep.model.forward_batch_size`. ``cuda_graph`` (experimental, off): on one CUDA device,
    replay the forward and backward pass of the ``"window"`` network from a CUDA graph
    (:mod:`minrep.cudagraph`): twice the epochs per second on an H200; its first version
    trained worse there (a bug since fixed, see the module), the fix not yet measured on a
    GPU."""

    preset: str | None = "quick"
    plan: Plan | None = None
    batch_size: int = 256
    val_fraction: float = 0.2
    seed: int = 0
    lr: float | None = None
    init: str | None = None
    max_epochs: int | None = None
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    crop_min_steps: int | None = None
    precision: str = "32-true"
    cuda_graph: bool = False

    def __post_init__(self):
        if isinstance(self.init, os.PathLike):
            self.init = str(self.init)
        for name, (valid, what) in _FIELD_CHECKS.items():
            value = getattr(self, name)
            if not valid(value):
                raise TrainingError(f"training configuration: {name} must be {what}, got {value!r}")
        if self.plan is None and self.preset not in PRESETS:
            raise TrainingError(
                f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)} or give a plan"
            )

    def resolved(self) -> TrainConfig:
        """The same training with its plan spelled out: the preset's plan when none is given,
        ``lr`` folded into it (and then None); ``preset`` names the plan only when it is the
        preset's unchanged. What a run records, and resolving it again changes nothing."""
        plan = self.plan if self.plan is not None else PRESETS[self.preset]
        if self.lr is not None:
            plan = plan.scaled_lr(self.lr)
        preset = self.preset if plan == PRESETS.get(self.preset) else None
        return dataclasses.replace(self, plan=plan, lr=None, preset=preset)

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["plan"] = None if self.plan is None else self.plan.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """From :meth:`to_dict` (a run's ``config.json`` ``training`` section); missing keys
        take their defaults (runs written before a field existed), unknown keys are refused."""
        if not isinstance(values, dict):
            raise TrainingError(f"training configuration: expected a mapping, got {values!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise TrainingError(
                f"unknown training configuration keys: {', '.join(unknown)} "
                f"(known: {', '.join(known)})"
            )
        values = dict(values)
        if isinstance(values.get("plan"), dict):
            try:
                values["plan"] = Plan.from_dict(values["plan"])
            except (KeyError, TypeError, ValueError) as err:
                raise TrainingError(f"training configuration: plan is not a plan ({err})") from None
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# Data: the whole set stays in memory as one tensor; batches are slices of it.


WHOLE_DECODER_CROP = 10
"""Shortest prefix a ``"whole"``-decoder network is trained on by default (displacements):
the 2024 AnDi challenge's tracks start at 20 positions."""


class Batches(torch.utils.data.Dataset):
    """Item i is this process's i-th batch. Batches are slices of a permutation drawn afresh
    each epoch (``shuffle``) from ``seed`` and the epoch, the same on every process; process
    ``rank`` of ``world`` takes batches rank, rank + world, ... For training (``pad``) every
    process gets the same number of batches (data-parallel steps must pair up), wrapping
    around to the first batches; for validation nothing is counted twice.

    ``crop_min_steps``: each batch is cut to its first n displacements, the same n for the
    whole batch (no padding, nothing masked): the whole length for half the batches, else n
    log-uniform between ``crop_min_steps`` and the whole, drawn from the seed, epoch and
    batch. Prefixes, not windows: SBM's law depends on the time since the start."""

    def __init__(
        self,
        data: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        pad: bool = True,
        crop_min_steps: int | None = None,
    ):
        self.data, self.batch_size, self.shuffle, self.seed = data, batch_size, shuffle, seed
        self.pad, self.crop_min_steps = pad, crop_min_steps
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
            order = torch.randperm(len(self.data), generator=generator)
            self._order = order.to(self.data.device)  # where the data are (a GPU's: setup)
            self._order_epoch = self.epoch
        return self._order

    def __getitem__(self, i: int) -> torch.Tensor:
        if i >= len(self):
            raise IndexError(i)
        j = (self.rank + i * self.world) % self.n_batches
        sl = slice(j * self.batch_size, (j + 1) * self.batch_size)
        order = self._permutation()
        batch = self.data[sl] if order is None else self.data[order[sl]]
        return batch if self.crop_min_steps is None else batch[..., : self.crop_length(j)]

    def crop_length(self, j: int) -> int:
        """Displacements kept of batch ``j`` of this epoch (see the class docstring)."""
        full = self.data.shape[-1]
        low = min(self.crop_min_steps, full)
        generator = torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) * 7919 + j)
        whole, u = torch.rand(2, generator=generator).tolist()
        if whole < 0.5:
            return full
        return min(full, int(math.exp(math.log(low) + u * (math.log(full + 1) - math.log(low)))))


def split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of ``n`` trajectories."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# ---------------------------------------------------------------------------------------------
# The Lightning module


GPU_RESIDENT_BYTES = 4 * 2**30
"""Training and validation sets up to this size are moved to the GPU once, and batches drawn
there."""


class MinrepModule(pl.LightningModule):
    """Wraps :class:`minrep.model.VAE` with the plan: sets beta, learning rate and momentum at
    every batch, and sums the training loss and the held-out NLL and KL per latent over all
    processes at every epoch, and the moments of the held-out posteriors that give the
    effective dimension (:mod:`minrep.dimension`). With ``cuda_graph`` (and where
    :meth:`uses_cuda_graph`) the gradients come from a :class:`GradientGraph` and the module
    steps the optimiser itself (Lightning's manual optimisation)."""

    def __init__(
        self,
        config: ModelConfig,
        plan: Plan,
        datasets: list[Batches],
        seed: int = 0,
        cuda_graph: bool = False,
    ):
        super().__init__()
        self.model = VAE(config)
        self.plan = plan
        self.datasets = datasets  # training and validation batches, sharded in setup()
        self.seed = seed
        self.cuda_graph = cuda_graph
        self._gradients: GradientGraph | None = None
        self.follow_plan = True  # False while the learning-rate finder sweeps the rate
        self.lr = plan.stages[0].lr
        self.beta = 0.0
        self._train_sums = torch.zeros(3)  # loss x batch size, trajectories, non-finite losses
        self._first_bad_batch = torch.zeros((), dtype=torch.long)  # 1-based; 0: none
        self._val_sums = torch.zeros(3 + config.latent_dim)
        self._val_moments = torch.zeros(LatentMoments.size(config.latent_dim))
        self.val_metrics: dict = {}
        self.branched_from: int | None = None  # the stage this epoch's weights started from
        self.collapsed: list[int] = []  # latents collapsed to the prior for this epoch
        self.train_loss = float("nan")
        self._train_loss_reduced = False

    def setup(self, stage: str) -> None:
        # Before Lightning counts the batches: each process takes its share of the data and
        # draws its own reparameterisation noise.
        device = self.trainer.strategy.root_device
        on_gpu = device.type == "cuda"
        self.datasets[1].batch_size = forward_batch_size(device)
        for dataset in self.datasets:
            dataset.shard(self.global_rank, self.trainer.world_size)
            if on_gpu and dataset.data.nbytes <= GPU_RESIDENT_BYTES:
                dataset.data = dataset.data.to(device)
        torch.manual_seed(self.seed * 1_000 + self.global_rank)
        self.automatic_optimization = not self.uses_cuda_graph()

    def uses_cuda_graph(self) -> bool:
        """Whether the gradients come from a :class:`GradientGraph`: asked for, one CUDA
        device, the ``"window"`` network (the ``"whole"`` one builds constants on the host
        in its forward pass, which a capture cannot hold), and following the plan (not the
        learning-rate finder, which drives the optimiser itself) without a decoder-only stage
        (another loss, which the one graph does not hold)."""
        return (
            self.cuda_graph
            and self.trainer.strategy.root_device.type == "cuda"
            and self.trainer.world_size == 1
            and self.model.config.decoder == "window"
            and self.follow_plan
            and not any(stage.decoder_only for stage in self.plan.stages)
        )

    def configure_optimizers(self):
        # Fused on a GPU: one kernel for the whole update (the same arithmetic).
        fused = self.device.type == "cuda" or None
        return torch.optim.Adam(self.model.parameters(), lr=self.lr, fused=fused)

    def training_step(self, batch: torch.Tensor, batch_idx: int):
        epoch = self.current_epoch + batch_idx / self.trainer.num_training_batches
        position = self.plan.at(epoch)
        self.beta = position["beta"] if self.follow_plan else self.plan.stages[0].beta(0.0)
        if self.follow_plan:
            for group in self.optimizers().optimizer.param_groups:
                group["lr"] = position["lr"]
                group["betas"] = (position["momentum"], group["betas"][1])
        decorrelation = position["decorrelation"] if self.follow_plan else 0.0
        decoder_only = self.follow_plan and position["decoder_only"]
        # Prefixes (crop_min_steps) weigh each step as in a whole trajectory (VAE.loss).
        whole = self.datasets[0].data.shape[-1] - self.model.first_predicted_step
        if self.automatic_optimization:
            loss, _ = self.model.loss(
                batch,
                self.beta,
                decorrelation,
                reference_steps=whole,
                decoder_only=decoder_only,
                encode_steps=position["encode_steps"] if decoder_only else None,
            )
        else:
            if self._gradients is None:
                capture = batch.device.type == "cuda"
                self._gradients = GradientGraph(self.model, batch, whole, capture=capture)
            loss = self._gradients(batch, self.beta, decorrelation).clone()
            self.optimizers().step()
        self._account(loss.detach(), len(batch), batch_idx)
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("beta", self.beta, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def _account(self, loss: torch.Tensor, n: int, batch_idx: int) -> None:
        """Add a batch's loss to the epoch's sums. A non-finite loss stops training: at once
        on a CPU; on a GPU, where the check would make every step wait for the device, at the
        end of the epoch (:meth:`epoch_train_loss`), naming the first bad batch."""
        finite = torch.isfinite(loss)
        if self.check_every_step:
            if not finite:
                raise self._non_finite(batch_idx, loss.item())
        else:  # on the device, without waiting for it
            keep = finite | (self._first_bad_batch > 0)
            self._first_bad_batch = torch.where(keep, self._first_bad_batch, batch_idx + 1)
        self._train_sums += torch.stack(
            [loss.float() * n, torch.ones_like(loss) * n, (~finite).float()]
        )

    @property
    def check_every_step(self) -> bool:
        return self.device.type != "cuda"

    def _non_finite(self, batch_idx: int, value) -> TrainingError:
        epoch = self.current_epoch + batch_idx / self.trainer.num_training_batches
        position = self.plan.at(epoch)
        beta, lr = (position["beta"], position["lr"]) if self.follow_plan else (self.beta, self.lr)
        return TrainingError(
            f"non-finite loss ({value}) at epoch {self.current_epoch + 1}, batch "
            f"{batch_idx + 1} (beta {beta:.3g}, learning rate {lr:.3g}); "
            f"training stopped and the last good checkpoint is kept"
        )

    def on_train_epoch_start(self):
        self.datasets[0].epoch = self.current_epoch
        self._train_sums = torch.zeros(3, device=self.device)
        self._first_bad_batch = torch.zeros((), dtype=torch.long, device=self.device)
        self._train_loss_reduced = False
        self.branched_from = None
        earlier = self.plan.branch_start(self.current_epoch) if self.follow_plan else None
        if earlier is not None:
            self.branch(earlier)
        self.collapsed = []
        if (
            self.follow_plan
            and self.plan.stages[self.plan.locate(self.current_epoch)[0]].while_redundant
        ):
            self.collapse_redundant()

    def collapse_redundant(self) -> None:
        """Collapse to the prior (:meth:`VAE.collapse_latents`), for this epoch, every
        surviving latent that mostly carries noise and every redundant one but the most
        informative of its group, as found on the last validation (run again after a resume).
        Under the loss alone a redundant copy dies slowly or not at all (SBM, data and seed 2:
        0.77 -> 0.47 nat in 5 epochs; collapsed once, it was back to 0.45 nat within an epoch),
        so the collapse holds through the epoch (:meth:`on_train_batch_end`), and the epoch's
        validation then says whether the latents left carry every dimension and the NLL
        (docs/training-recipes.md)."""
        if "dimension" not in self.val_metrics:
            self.revalidate()
        kl, found = self.val_metrics["kl_per_latent"], self.val_metrics["dimension"]
        self.collapsed = sorted(
            [
                *found.noisy,
                *(i for g in found.redundant for i in sorted(g, key=kl.__getitem__)[:-1]),
            ]
        )
        self._hold_collapse()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._hold_collapse()  # each optimiser step would begin to revive them

    def _hold_collapse(self) -> None:
        """Zero the collapsed latents' rows of the encoder's last layer and Adam's moments of
        them."""
        if not self.collapsed:
            return
        rows = self.model.collapse_latents(self.collapsed)
        state = self.optimizers().optimizer.state
        for weights in (self.model.encoder.latent.weight, self.model.encoder.latent.bias):
            for moment in state.get(weights, {}).values():
                if moment.shape == weights.shape:  # Adam's two moments, not its step count
                    moment[rows] = 0.0

    def branch(self, earlier: int) -> None:
        """Continue from the weights saved at the end of stage ``earlier`` (a branch of the
        plan; every process loads them), with Adam's moments reset."""
        run_dir = self.trainer.default_root_dir
        saved = checkpoint.load_model(Path(run_dir) / "stages" / f"stage-{earlier}")
        self.model.load_state_dict(saved.state_dict())
        self.optimizers().optimizer.state.clear()
        self.branched_from = earlier

    def epoch_train_loss(self) -> float:
        """Mean training loss of the epoch now ending, over all processes. A collective: every
        process calls it (the run directory's on_train_epoch_end does, which Lightning runs
        before the module's own); reduced once per epoch."""
        if not self._train_loss_reduced:
            sums = self.trainer.strategy.reduce(self._train_sums.to(self.device), reduce_op="sum")
            if sums[2] > 0:
                bad = int(self._first_bad_batch)
                if bad == 0:
                    raise TrainingError(
                        f"non-finite loss on another process in epoch {self.current_epoch + 1}"
                        "; training stopped and the last good checkpoint is kept"
                    )
                raise self._non_finite(bad - 1, "nan or inf")
            self.train_loss = (sums[0] / sums[1]).item()
            self._train_loss_reduced = True
        return self.train_loss

    def on_validation_epoch_start(self):
        self._val_sums = torch.zeros(3 + self.model.config.latent_dim, device=self.device)
        # Summed in float64 where the device has it: the covariance is a difference of sums.
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        size = LatentMoments.size(self.model.config.latent_dim)
        self._val_moments = torch.zeros(size, dtype=dtype, device=self.device)

    def validation_step(self, batch: torch.Tensor, batch_idx: int):
        with full_precision(batch):  # compared with the exact NLL at 1e-3 nat
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
        mu = out["mu"].to(self._val_moments.dtype)
        logvar = out["logvar"].to(self._val_moments.dtype)
        self._val_moments += torch.cat(
            [
                mu.new_tensor([len(mu)]),
                mu.sum(0),
                (mu.T @ mu).flatten(),
                logvar.exp().sum(0),
                logvar.sum(0),
            ]
        )  # the order of LatentMoments.to_vector

    def on_validation_epoch_end(self):
        self._reduce_validation()
        self.log("val_nll", self.val_metrics["val_nll"], prog_bar=True, sync_dist=False)
        survivors = float(len(surviving(self.val_metrics["kl_per_latent"])))
        self.log("survivors", survivors, prog_bar=True, sync_dist=False)

    def revalidate(self) -> None:
        """Run the validation again (after the weights changed outside the loop), in every
        process: new ``val_metrics``."""
        training = self.model.training
        self.model.eval()
        self.on_validation_epoch_start()
        validation = self.datasets[1]
        with torch.no_grad():
            for i in range(len(validation)):
                self.validation_step(validation[i].to(self.device), i)
        self._reduce_validation()
        self.model.train(training)

    def _reduce_validation(self) -> None:
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        count = sums[0]
        kl = (sums[3:] / count).tolist()
        moments = self.trainer.strategy.reduce(self._val_moments, reduce_op="sum")
        dimension = effective_dimension_of_moments(
            LatentMoments.from_vector(moments.cpu().numpy()), surviving(kl)
        )
        self.val_metrics = {
            "val_nll": (sums[1] / count).item(),
            "val_loss": (sums[2] / count).item(),
            "kl_per_latent": kl,
            "dimension": dimension,
        }


# ---------------------------------------------------------------------------------------------
# The run directory: history, checkpoints, exported models


HISTORY = "history.csv"


def _write_history(run_dir: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with io.atomic_write(run_dir / HISTORY) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plain(value):
    """A plain Python value: the checkpoint is loaded back with weights_only=True."""
    if isinstance(value, str | float | int):
        return value
    return float(value)


def _upgrade_rows(rows: list[dict]) -> list[dict]:
    """History rows of a run begun before ``seconds`` became ``epoch_seconds`` and
    ``elapsed_seconds``, in today's columns (the epoch's time from the differences)."""
    upgraded, before = [], 0.0
    for row in rows:
        if "seconds" in row:
            elapsed = row["seconds"]
            row = {k: v for k, v in row.items() if k != "seconds"}
            row.update(epoch_seconds=elapsed - before, elapsed_seconds=elapsed)
        before = row["elapsed_seconds"]
        if "effective_dimension" not in row:  # begun before the effective dimension
            row = _with_dimension_columns(row)
        row.setdefault("note", "")  # begun before proposal stages
        upgraded.append(row)
    return upgraded


def _with_dimension_columns(row: dict) -> dict:
    """A history row of a run begun before the effective dimension was recorded, with its
    columns in today's places (not measured: NaN and empty)."""
    out = {}
    for key, value in row.items():
        out[key] = value
        if key == "n_surviving":
            out.update(effective_dimension=float("nan"), redundant="")
    return out


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
        self.epoch_started = self.started
        self.offset = 0.0  # seconds spent before a resume

    def state_dict(self) -> dict:
        return {"rows": self.rows, "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rows = _upgrade_rows(list(state["rows"]))
        self.offset = self.rows[-1]["elapsed_seconds"] if self.rows else 0.0
        torch.set_rng_state(state["torch_rng"])

    def on_train_epoch_start(self, trainer: pl.Trainer, module: MinrepModule) -> None:
        self.epoch_started = time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, module: MinrepModule) -> None:
        # A resumed run that had ended at a while_redundant stage stays ended.
        if self.rows and self._minimal_end(module, self.rows[-1]):
            trainer.should_stop = True

    @staticmethod
    def _minimal_end(module: MinrepModule, row: dict) -> bool:
        """Whether training ends after ``row``'s epoch: the plan's last stage runs only while
        more latents survive than the representation has dimensions (``while_redundant``)."""
        return (
            module.follow_plan
            and module.plan.ends_when_minimal(row["epoch"])
            and row["n_surviving"] <= row["effective_dimension"]
        )

    def _row(self, trainer: pl.Trainer, module: MinrepModule) -> dict:
        epoch = trainer.current_epoch + 1
        kl = module.val_metrics["kl_per_latent"]
        now = time.perf_counter()
        row = {
            "epoch": epoch,
            "stage": module.plan.at(epoch - 1e-9)["stage"] + 1,
            "beta": module.beta,
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            # Reduced here: Lightning runs this hook before the module's on_train_epoch_end.
            "train_loss": module.epoch_train_loss(),
            "val_loss": module.val_metrics["val_loss"],
            "val_nll": module.val_metrics["val_nll"],
            "val_exact_nll": self.exact_nll.get("all", float("nan")),
            "val_exact_nll_rf": self.exact_nll.get("rf", float("nan")),
            "val_kl": sum(kl),
            **{f"kl_{i}": v for i, v in enumerate(kl)},
            "surviving": " ".join(map(str, surviving(kl))),
            "n_surviving": len(surviving(kl)),
            "effective_dimension": module.val_metrics["dimension"].dimension,
            "redundant": " ".join(map(str, module.val_metrics["dimension"].redundant_latents)),
            "epoch_seconds": now - self.epoch_started,
            "elapsed_seconds": self.offset + now - self.started,
            "note": "; ".join(
                filter(
                    None,
                    [
                        module.branched_from
                        and f"started from stage {module.branched_from}'s weights",
                        module.collapsed
                        and f"latents {' '.join(map(str, module.collapsed))} collapsed "
                        "to the prior",
                    ],
                )
            ),
        }
        return {k: _plain(v) for k, v in row.items()}

    def _compare(self, trainer: pl.Trainer, module: MinrepModule, row: dict, earlier: int):
        """End of a proposal stage (``Stage.compare_with``): keep its weights or restore those
        at the end of stage ``earlier``, whichever has the lower held-out loss; the row then
        describes the weights kept, and its note says what happened."""
        end = module.plan.stage_ends()[earlier - 1]
        before = next(r for r in self.rows if r["epoch"] == end)
        proposal = (
            f"stage {row['stage']}: held-out loss {row['val_loss']:.5f} with "
            f"{row['n_surviving']} latents against {before['val_loss']:.5f} with "
            f"{before['n_surviving']} at the end of stage {earlier}"
        )
        if row["val_loss"] <= before["val_loss"]:
            return {**row, "note": proposal + ": kept"}
        saved = checkpoint.load_model(self.run_dir / "stages" / f"stage-{earlier}")
        module.model.load_state_dict(saved.state_dict())
        module.revalidate()
        restored = self._row(trainer, module)
        restored["epoch_seconds"], restored["elapsed_seconds"] = (
            row["epoch_seconds"],
            row["elapsed_seconds"],
        )
        return {**restored, "note": proposal + f": stage {earlier}'s weights restored"}

    def on_train_epoch_end(self, trainer: pl.Trainer, module: MinrepModule) -> None:
        row = self._row(trainer, module)
        earlier = module.plan.compared_stage(row["epoch"])
        if earlier is not None:
            row = self._compare(trainer, module, row, earlier)
        if self._minimal_end(module, row):
            row["note"] = "; ".join(
                filter(None, [row["note"], "no latent redundant: training ends here"])
            )
            trainer.should_stop = True
        self.rows.append(row)
        ckpt = self.run_dir / "checkpoints" / "last.ckpt"
        tmp = ckpt.with_suffix(".ckpt.tmp")
        # Full state (optimizer too); every process calls it, only rank 0 writes.
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            if row["epoch"] in module.plan.stage_ends():
                stage_dir = self.run_dir / "stages" / f"stage-{row['stage']}"
                extra = {**self.settings, "epoch": row["epoch"]}
                checkpoint.save_model(module.model, stage_dir, extra)
            _write_history(self.run_dir, self.rows)
            os.replace(tmp, ckpt)
        trainer.strategy.barrier()


# ---------------------------------------------------------------------------------------------
# Progress: a bar on a terminal, one line per epoch elsewhere; epochs counted from 1


class EpochBar(TQDMProgressBar):
    """Lightning's bar (on stdout), with epochs counted from 1 as in ``history.csv``."""

    def __init__(self, refresh_rate: int = 10):
        super().__init__(refresh_rate=refresh_rate)  # leave=False: one bar, reset each epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, *_) -> None:
        bar, total = self.train_progress_bar, self.total_train_batches
        epoch = trainer.current_epoch + 1
        bar.set_description(f"Epoch {epoch}/{trainer.max_epochs}", refresh=False)
        bar.reset(total=total if math.isfinite(total) else None)
        bar.initial = 0


def epoch_line(row: dict, epochs: int) -> str:
    """One line on an epoch's history row."""
    exact = row["val_exact_nll"]
    return (
        f"epoch {row['epoch']}/{epochs} (stage {row['stage']}, beta {row['beta']:.3g}): "
        f"loss {row['train_loss']:.4f}, held-out loss {row['val_loss']:.4f}, held-out NLL "
        f"{row['val_nll']:.4f}" + ("" if math.isnan(exact) else f" (exact {exact:.4f})") + ", "
        f"{row['n_surviving']} surviving latents [{row['surviving']}], "
        f"effective dimension {row['effective_dimension']}, {row['epoch_seconds']:.1f} s"
        + (f"; {row['note']}" if row.get("note") else "")
    )


class EpochLines(Callback):
    """Off a terminal: one line per epoch on stderr, from the row the run directory wrote
    (this callback must come after :class:`RunDirectory`)."""

    def __init__(self, run_files: RunDirectory):
        self.run_files = run_files

    def on_train_epoch_end(self, trainer: pl.Trainer, module: MinrepModule) -> None:
        if trainer.is_global_zero and self.run_files.rows:
            line = epoch_line(self.run_files.rows[-1], trainer.max_epochs)
            print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Entry point


@dataclass
class TrainResult:
    run_dir: Path
    model: VAE
    history: list[dict] = field(default_factory=list)
    primary: bool = True  # False in the other processes of a data-parallel run
    dimension: EffectiveDimension | None = None  # of the last epoch's held-out posteriors


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
    check_scale(data, config, source, stacklevel=3)  # float32 range; trajectories that never move
    if len(data) < 10:
        raise TrainingError(f"{source}: {len(data)} trajectories are too few to train on")


def validation_exact_nll(data: io.Trajectories, start: int) -> dict[str, float] | None:
    """Mean exact NLL of a labelled simulated set, steps ``start ..``: conditioned on all
    earlier steps (``all``, the floor of any model) and on the last ``start`` (``rf``, the
    floor of a model with that receptive field; NaN for ``start`` 0, a model of the whole
    past, and for a set simulated with localisation noise or blur, whose steps are
    conditioned on all earlier ones). None when labels are missing."""
    process = data.process
    if process not in processes.PROCESSES or data.alpha is None or data.D is None:
        return None
    args = (data.displacements, process, data.alpha, data.D)
    measurement = data.measurement()
    if start == 0 or any(np.any(v != 0) for v in measurement.values()):
        every = processes.exact_nll(*args, start=start, **measurement)
        return {"all": float(every.mean()), "rf": float("nan")}
    return {
        "all": float(processes.exact_nll(*args, start=start).mean()),
        "rf": float(processes.exact_nll(*args, start=start, memory=start).mean()),
    }


def training_range(data: io.Trajectories) -> dict[str, list[float]] | None:
    """``{"alpha": [lo, hi], "D": [lo, hi]}`` of the labels of ``data`` (alpha of Brownian
    motion is 1), or None where the data carry no such labels. A set simulated with a
    measurement adds ``"exposure"`` and ``"reduced_noise"`` (sigma^2 / (2 D), a frame the time
    unit), the ranges a model's calibration draws from (:mod:`minrep.estimation`)."""
    alpha, D = data.alpha, data.D
    if alpha is None and data.process == "bm":
        alpha = np.ones(1)
    if alpha is None or D is None:
        return None
    ranges = [("alpha", alpha), ("D", D)]
    if "exposure" in data.labels:
        ranges.append(("exposure", data.labels["exposure"]))
    if "noise" in data.labels:
        ranges.append(("reduced_noise", np.asarray(data.labels["noise"]) ** 2 / (2 * D)))
    bounds = {}
    for name, values in ranges:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return None
        bounds[name] = [float(values.min()), float(values.max())]
    return bounds


@dataclass
class _Run:
    """Everything :func:`train` settles before a trainer is built."""

    run_dir: Path
    config: TrainConfig  # resolved
    model_config: ModelConfig
    resuming: bool
    start: VAE | None  # the model whose weights a new run starts from (init)
    train_set: torch.Tensor
    val_set: torch.Tensor
    exact_nll: dict[str, float] | None
    settings: dict  # config.json's training and data sections


class _StopOnSignals(Callback):
    """While a trainer fits (``with stopper.watching(trainer)``), SIGINT and SIGTERM stop it
    after the batch in flight, and :func:`train` raises :class:`TrainingInterrupted`.

    Left to themselves, SIGINT raises KeyboardInterrupt wherever the step is (Lightning then
    exits with status 1) and SIGTERM makes Lightning raise its SIGTERMException, a SystemExit
    without a status: the process exits 0 without a model, as if it had succeeded. Here
    either signal raises Lightning's own SIGTERM flag, which its loops check after every
    batch and which data-parallel processes share; the checkpoint of the last finished epoch
    is kept (an epoch-end checkpoint in the making is finished: the flag is read only between
    batches). A second signal stops at once (KeyboardInterrupt). Only in the main thread,
    where Python delivers signals. As a callback, it raises the flag again once training
    starts, for a signal received while Lightning was still setting up (it clears the flag
    when it installs its own handler)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    # Lightning's own line on SIGTERM ("[rank: 0] Received SIGTERM: 15"): train's error says it.
    LOGGER = logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector")

    def __init__(self):
        self.received: int | None = None
        self.trainer: pl.Trainer | None = None

    @contextlib.contextmanager
    def watching(self, trainer: pl.Trainer) -> Iterator[_StopOnSignals]:
        self.trainer = trainer
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                previous[signum] = signal.signal(signum, self._handle)
        level = self.LOGGER.level
        self.LOGGER.setLevel(logging.WARNING)
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.LOGGER.setLevel(level)

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt  # asked twice: stop now
        self.received = signum
        self._raise_flag()

    def _raise_flag(self) -> None:
        # Lightning's flag (its SIGTERM handler sets it too): read after every batch. Where a
        # Lightning version has no such flag, stop at once as for a second signal.
        connector = getattr(self.trainer, "_signal_connector", None)
        if connector is None or not hasattr(connector, "received_sigterm"):
            raise KeyboardInterrupt
        connector.received_sigterm = True

    def on_train_start(self, trainer: pl.Trainer, module: MinrepModule) -> None:
        if self.received is not None:
            self._raise_flag()


def train(
    data,
    run_dir,
    config: TrainConfig | None = None,
    *,
    model_config: ModelConfig | None = None,
    resume: bool = False,
    find_lr: bool = False,
    progress: bool = True,
    source: str | None = None,
) -> TrainResult:
    """Train a model on ``data`` (a :class:`minrep.io.Trajectories` or a dataset path) into the
    run directory ``run_dir`` as ``config`` says (a :class:`TrainConfig`; default: the
    ``quick`` preset) with the network of ``model_config`` (default: minrep's
    scale-equivariant one). ``resume`` continues a run from its last checkpoint with the
    settings it recorded; of ``config`` only ``max_epochs`` and the hardware count then.
    ``find_lr`` runs Lightning's learning-rate finder instead of training. ``progress``: a bar
    on a terminal, one line per epoch on stderr otherwise. ``source`` names the data in
    messages and in config.json (default: the path, or ``data``).

    SIGINT or SIGTERM while training stops it after the batch in flight and raises
    :class:`TrainingInterrupted`: the last finished epoch's checkpoint is kept, no final model
    is written, and ``resume`` continues."""
    run = _prepare(data, Path(run_dir), config or TrainConfig(), model_config, resume, source)
    module = _build_module(run)
    run_files = RunDirectory(run.run_dir, run.settings, run.exact_nll)
    signals = _StopOnSignals()
    callbacks = [run_files, signals, *_progress_callbacks(progress, run_files)]
    trainer = _build_trainer(run, callbacks)
    loaders = [torch.utils.data.DataLoader(d, batch_size=None) for d in module.datasets]
    if find_lr:
        return _find_lr(trainer, module, loaders[0], run.run_dir)
    ckpt = run.run_dir / "checkpoints" / "last.ckpt" if run.resuming else None
    with signals.watching(trainer):
        try:
            trainer.fit(module, *loaders, ckpt_path=ckpt, weights_only=True)
        except SystemExit:  # Lightning's SIGTERMException, or its exit after a second signal
            if signals.received is None:
                raise
    if signals.received is not None and not trainer.state.finished:
        raise _interrupted(run, signals.received, run_files.rows)
    model = module.model.eval()
    model.training_range = run.settings["data"]["training_range"]
    if trainer.is_global_zero:
        _export(run, model, trainer.current_epoch)
    return TrainResult(
        run.run_dir,
        model,
        run_files.rows,
        trainer.is_global_zero,
        module.val_metrics.get("dimension"),
    )


def _interrupted(run: _Run, signum: int, rows: list[dict]) -> TrainingInterrupted:
    """The error of a run stopped by ``signum``, saying how to go on."""
    name = signal.Signals(signum).name
    source = run.settings["data"]["source"]
    data = source if source != "data" else "DATA"
    if (run.run_dir / "checkpoints" / "last.ckpt").is_file() and rows:
        message = (
            f"training stopped by {name} after epoch {rows[-1]['epoch']} (any epoch in "
            f"progress is dropped; {run.run_dir / 'checkpoints' / 'last.ckpt'} is kept); "
            f"continue with: minrep train {data} -o {run.run_dir} --resume"
        )
        return TrainingInterrupted(message, signum, run.run_dir, resumable=True)
    message = (
        f"training stopped by {name} before its first epoch ended: nothing to resume; start "
        f"again with: minrep train {data} -o {run.run_dir}"
    )
    return TrainingInterrupted(message, signum, run.run_dir, resumable=False)


def _prepare(
    data,
    run_dir: Path,
    config: TrainConfig,
    model_config: ModelConfig | None,
    resume: bool,
    source: str | None = None,
) -> _Run:
    """Load and check the data, settle the configuration (a new run's or the resumed run's),
    split the data and record what config.json will say."""
    if source is None:
        source = "data" if isinstance(data, io.Trajectories) else str(data)
    if not isinstance(data, io.Trajectories):
        data = io.load_npz(data)
    saved, start = None, None
    if resume:
        saved = _saved_run(run_dir)
        config = _resumed_config(saved, config, run_dir)
        model_config = ModelConfig.from_dict(saved["model"])
    else:
        config, model_config, start = _new_run_config(run_dir, config, model_config)
    # minrep's default network works on displacements of order one (see minrep.model).
    model_config = model_config or ModelConfig(dim=data.dim, scale_equivariant=True)
    if not resume and config.crop_min_steps is None and model_config.decoder == "whole":
        config = dataclasses.replace(config, crop_min_steps=WHOLE_DECODER_CROP)
    if config.crop_min_steps is not None and config.crop_min_steps < model_config.min_steps:
        raise TrainingError(
            f"crop_min_steps {config.crop_min_steps} is shorter than the {model_config.min_steps} "
            f"displacements this network needs"
        )
    for number, stage in enumerate(config.resolved().plan.stages, start=1):
        if stage.encode_steps is not None and stage.encode_steps < model_config.min_steps:
            raise TrainingError(
                f"stage {number}: encode_steps {stage.encode_steps} is shorter than the "
                f"{model_config.min_steps} displacements this network needs"
            )
    check_data(data, model_config, source)
    train_idx, val_idx = _split_checked(data, config, source)
    data_section = {
        "source": source,
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "n_steps": data.n_steps,
        "dim": data.dim,
        "process": data.process,
        "training_range": training_range(data),
    }
    if saved is not None:
        _check_same_data(saved["data"], data_section, source, run_dir)
    tensor = torch.from_numpy(data.displacements)
    train_set, val_set = tensor[train_idx], tensor[val_idx]
    if saved is None and start is None:
        log_scale = rms_scale(train_set).log().mean().item()
        model_config = dataclasses.replace(model_config, log_scale_mean=log_scale)
        if model_config.decoder == "whole":  # the last displacement trained on
            model_config = dataclasses.replace(model_config, time_horizon=data.n_steps - 1)
    exact = validation_exact_nll(data.subset(val_idx), model_config.first_predicted_step)
    data_section["val_exact_nll"] = exact
    settings = {"training": config.to_dict(), "data": data_section}
    return _Run(
        run_dir, config, model_config, saved is not None, start, train_set, val_set, exact, settings
    )


def _new_run_config(run_dir: Path, config: TrainConfig, model_config: ModelConfig | None):
    """A new run's resolved configuration, network configuration and the model it starts
    from (``init``; None for a fresh network)."""
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        raise TrainingError(f"{run_dir} holds a run already: pass resume (--resume) or a new path")
    config = config.resolved()
    if config.init is None:
        return config, model_config, None
    if model_config is not None:
        raise TrainingError("give either a model configuration or a model to start from")
    start = checkpoint.load_model(config.init)
    config = dataclasses.replace(config, init=str(checkpoint.resolve(config.init)))
    return config, start.config, start


def _saved_run(run_dir: Path) -> dict:
    """The config.json of a run to resume."""
    config_path = run_dir / checkpoint.CONFIG
    if not (run_dir / "checkpoints" / "last.ckpt").is_file() or not config_path.is_file():
        raise TrainingError(f"{run_dir}: nothing to resume (no checkpoints/last.ckpt)")
    try:
        saved = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TrainingError(f"{config_path}: cannot be read ({err})") from None
    sections = ("model", "training", "data")
    missing = [
        k for k in sections if not isinstance(saved, dict) or not isinstance(saved.get(k), dict)
    ]
    if missing:
        raise TrainingError(f"{config_path}: not a run's config.json (no {', '.join(missing)})")
    return saved


def _resumed_config(saved: dict, given: TrainConfig, run_dir: Path) -> TrainConfig:
    """The resumed run's recorded settings, with when to stop and on which hardware from
    ``given``."""
    try:
        recorded = TrainConfig.from_dict(saved["training"])
    except TrainingError as err:
        raise TrainingError(f"{run_dir / checkpoint.CONFIG}: {err}") from None
    if recorded.plan is None:
        raise TrainingError(f"{run_dir / checkpoint.CONFIG}: the run recorded no plan")
    per_call = {f.name: getattr(given, f.name) for f in dataclasses.fields(given)}
    return dataclasses.replace(
        recorded, **{k: v for k, v in per_call.items() if k not in RUN_FIELDS}
    ).resolved()


def _split_checked(data: io.Trajectories, config: TrainConfig, source: str):
    """Training and validation indices, refusing a split that leaves too little of either."""
    train_idx, val_idx = split(len(data), config.val_fraction, config.seed)
    if len(val_idx) == 0:
        raise TrainingError(f"{source}: {len(data)} trajectories leave no validation set")
    if len(train_idx) < config.batch_size // 4:
        raise TrainingError(
            f"{source}: {len(train_idx)} training trajectories are too few for batches of "
            f"{config.batch_size}"
        )
    return train_idx, val_idx


def _check_same_data(saved: dict, current: dict, source: str, run_dir: Path) -> None:
    """A run resumes on its own data: the same sizes, process and (where the run recorded
    it) label range."""
    keys = ["n_train", "n_val", "n_steps", "dim", "process"]
    if "training_range" in saved:  # runs begun before it was recorded do not have it
        keys.append("training_range")
    changed = [k for k in keys if saved.get(k) != current[k]]
    if changed:
        raise TrainingError(
            f"{source}: not the data of {run_dir} ({', '.join(changed)} differ); resume with "
            f"the same dataset"
        )


def _build_module(run: _Run) -> MinrepModule:
    """The seeded Lightning module (from the starting model's weights for ``init``); a new
    run writes its config.json now, the weights only once trained."""
    config = run.config
    pl.seed_everything(config.seed, workers=True, verbose=False)
    datasets = [
        Batches(
            run.train_set,
            config.batch_size,
            shuffle=True,
            seed=config.seed,
            crop_min_steps=config.crop_min_steps,
        ),
        Batches(run.val_set, forward_batch_size("cpu"), shuffle=False, pad=False),
    ]
    module = MinrepModule(run.model_config, config.plan, datasets, config.seed, config.cuda_graph)
    if run.start is not None:
        module.model.load_state_dict(run.start.state_dict())
    if not run.resuming:
        checkpoint.save_config(module.model.config, run.run_dir, run.settings)
    return module


def _progress_callbacks(progress: bool, run_files: RunDirectory) -> list[Callback]:
    if not progress:
        return []
    return [EpochBar(refresh_rate=10)] if interactive() else [EpochLines(run_files)]


def _build_trainer(run: _Run, callbacks: list[Callback]) -> pl.Trainer:
    """A Lightning trainer for the plan (data-parallel over several devices or nodes), with a
    TensorBoard log where tensorboard is installed."""
    config = run.config
    logger = False
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(run.run_dir, name="tensorboard")
    except ImportError:
        pass
    parallel = config.devices not in (1, "1") or config.num_nodes > 1
    epochs = config.plan.epochs
    return pl.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy="ddp" if parallel else "auto",
        precision=config.precision,
        max_epochs=min(epochs, config.max_epochs or epochs),
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=any(isinstance(c, TQDMProgressBar) for c in callbacks),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=run.run_dir,
        use_distributed_sampler=False,  # Batches shards the data itself
        deterministic=False,
    )


def _export(run: _Run, model: VAE, epochs_done: int) -> None:
    """The final model in the run directory, and the training figure."""
    from minrep.plots import plot_training_history

    checkpoint.save_model(model, run.run_dir, {**run.settings, "epochs_done": epochs_done})
    plot_training_history(run.run_dir)


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
