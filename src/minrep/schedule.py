"""The training plan: beta schedules, the one-cycle learning-rate policy, stages and presets.

A plan is a list of stages, each with its own beta schedule and learning-rate policy. The
paper trains with beta = 0 until the reconstruction converges, then anneals beta upwards
monotonically, restarting a one-cycle learning-rate policy at every stage. Everything here is
plain Python (no torch): a plan is computed, saved to ``config.json`` and read back.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from itertools import accumulate

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
    """``{"kind": ..., **fields}`` of a registered schedule."""
    kinds = [k for k, v in SCHEDULES.items() if isinstance(schedule, v)]
    if not kinds:
        raise TypeError(
            f"{type(schedule).__name__} is not a registered beta schedule "
            f"({', '.join(SCHEDULES)}): add it to SCHEDULES"
        )
    return {"kind": kinds[0], **dataclasses.asdict(schedule)}


def schedule_from_dict(values: dict):
    """The schedule written by :func:`schedule_to_dict`."""
    values = dict(values)
    kind = values.pop("kind", None)
    if kind not in SCHEDULES:
        raise ValueError(f"unknown beta schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[kind](**values)


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


POLICIES = ("one-cycle", "constant")


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
        if self.policy not in POLICIES:
            raise ValueError(f"unknown learning-rate policy {self.policy!r}")
        if self.epochs < 1:
            raise ValueError("a stage needs at least one epoch")

    def to_dict(self) -> dict:
        beta = schedule_to_dict(self.beta)
        return {"epochs": self.epochs, "beta": beta, "lr": self.lr, "policy": self.policy}

    @classmethod
    def from_dict(cls, values: dict) -> Stage:
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown stage keys: {', '.join(unknown)}")
        values = dict(values)
        if isinstance(values.get("beta"), dict):
            values["beta"] = schedule_from_dict(values["beta"])
        return cls(**values)


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
        return list(accumulate(s.epochs for s in self.stages))

    def at(self, epoch: float) -> dict[str, float]:
        """Stage index, beta, learning rate and Adam beta1 at a fractional epoch (from 0)."""
        i, local = self.locate(epoch)
        stage = self.stages[i]
        if stage.policy == "one-cycle":
            lr, momentum = one_cycle(min(local / stage.epochs, 1.0), stage.lr)
        else:
            lr, momentum = stage.lr, 0.9
        return {"stage": i, "beta": stage.beta(local), "lr": lr, "momentum": momentum}

    def scaled_lr(self, lr: float) -> Plan:
        """This plan with the first stage's peak learning rate ``lr`` and every other stage's
        scaled by the same factor."""
        factor = lr / self.stages[0].lr
        return Plan([dataclasses.replace(s, lr=s.lr * factor) for s in self.stages])

    def to_dict(self) -> dict:
        return {"stages": [s.to_dict() for s in self.stages]}

    @classmethod
    def from_dict(cls, values: dict) -> Plan:
        stages = values["stages"]
        if not isinstance(stages, list) or not stages:
            raise ValueError("a plan needs a non-empty list of stages")
        return cls([Stage.from_dict(s) for s in stages])


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
