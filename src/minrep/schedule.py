"""The training plan: beta schedules, the one-cycle learning-rate policy, stages and presets.

A plan is a list of stages, each with its own beta schedule and learning-rate policy. The
paper trains with beta = 0 until the reconstruction converges, then anneals beta upwards
monotonically, restarting a one-cycle learning-rate policy at every stage. Everything here is
plain Python (no torch): a plan is computed, saved to ``config.json`` and read back.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from itertools import accumulate


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_numbers(owner: str, **rules) -> None:
    """Raise a ValueError naming the field (after ``owner``) unless each ``name=(value, test,
    what)`` is a finite real number that passes ``test``."""
    for name, (value, test, what) in rules.items():
        if not (_is_real(value) and math.isfinite(value) and test(value)):
            raise ValueError(f"{owner}{name} must be {what}, got {value!r}")


# ---------------------------------------------------------------------------------------------
# Beta schedules: beta as a function of the (fractional) epoch since the stage began.


@dataclass(frozen=True)
class Constant:
    value: float

    def __post_init__(self):
        _check_numbers("constant beta: ", value=(self.value, lambda v: v >= 0, "a number >= 0"))

    def __call__(self, epoch: float) -> float:
        return self.value


@dataclass(frozen=True)
class LinearRamp:
    """From ``start`` to ``end`` linearly over ``epochs``, then held at ``end``."""

    start: float
    end: float
    epochs: float

    def __post_init__(self):
        _check_numbers(
            "linear beta ramp: ",
            start=(self.start, lambda v: v >= 0, "a number >= 0"),
            end=(self.end, lambda v: v >= 0, "a number >= 0"),
            epochs=(self.epochs, lambda v: v > 0, "a number of epochs > 0"),
        )

    def __call__(self, epoch: float) -> float:
        return self.start + (self.end - self.start) * min(max(epoch / self.epochs, 0.0), 1.0)


@dataclass(frozen=True)
class GeometricRamp:
    """From ``start`` to ``end`` (both > 0) evenly in log beta over ``epochs``, then held."""

    start: float
    end: float
    epochs: float

    def __post_init__(self):
        _check_numbers(
            "geometric beta ramp: ",
            start=(self.start, lambda v: v > 0, "a number > 0"),
            end=(self.end, lambda v: v > 0, "a number > 0"),
            epochs=(self.epochs, lambda v: v > 0, "a number of epochs > 0"),
        )

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
    """The schedule written by :func:`schedule_to_dict`. Raises a ValueError naming the kind,
    the key or the value that is wrong."""
    if not isinstance(values, dict):
        raise ValueError(f"a beta schedule is a number or a mapping with a kind, got {values!r}")
    values = dict(values)
    kind = values.pop("kind", None)
    if kind not in SCHEDULES:
        raise ValueError(f"unknown beta schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    fields = [f.name for f in dataclasses.fields(SCHEDULES[kind])]
    unknown = sorted(set(values) - set(fields))
    missing = [f for f in fields if f not in values]
    if unknown or missing:
        raise ValueError(
            f"beta schedule {kind!r} takes {', '.join(fields)}"
            + (f"; unknown: {', '.join(map(str, unknown))}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
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
    learning-rate policy: ``one-cycle`` up to ``lr`` or ``constant`` at ``lr``.

    Two settings let a plan try a move and keep it only if the loss says so (stage numbers
    from 1): ``start_from`` begins the stage from the weights saved at the end of an earlier
    stage (a branch), and ``compare_with`` makes training, at the end of the stage, keep
    whichever of its weights and those at the end of the stage named (the same constant beta)
    have the lower held-out loss. The ``quick`` preset uses both to leave a local minimum that
    holds a latent too many, while keeping a weak latent that the loss needs
    (docs/training-recipes.md).

    ``decoder_only`` freezes the encoder and trains the decoder at the posterior mean (no
    sampled latent, no KL in the loss): the latents, which the earlier stages made minimal,
    do not change, and the decoder learns the law of a trajectory given its posterior mean,
    the code that the analysis and generation use. Trained on sampled latents, it learns the
    law averaged over the posterior's spread, which beta widens (docs/whole-decoder.md).
    ``encode_steps`` (decoder-only stages) takes the posterior mean of each trajectory's first
    ``encode_steps`` displacements, the length the encoder was trained on, and the decoder's
    NLL over the whole: trained on longer trajectories, the decoder learns its law at lags
    that the encoder's training length does not reach (FBM's long memory).

    ``while_redundant`` (the last stage only) runs the stage only while more latents survive
    than the representation has dimensions (:mod:`minrep.dimension`): training ends at the
    first epoch end, the one before the stage included, where they agree, or after ``epochs``
    epochs. A plan's ``epochs`` counts the stage whole, as an upper bound."""

    epochs: int
    beta: Constant | LinearRamp | GeometricRamp = Constant(0.0)
    lr: float = 1e-3
    policy: str = "one-cycle"
    decorrelation: float = 0.0  # weight of minrep.model.latent_covariance in the loss
    compare_with: int | None = None
    start_from: int | None = None
    decoder_only: bool = False  # encoder frozen, decoder trained at the posterior mean
    encode_steps: int | None = None  # decoder_only: the posterior mean of this prefix
    while_redundant: bool = False  # last stage: only while latents outnumber dimensions

    def __post_init__(self):
        if _is_real(self.beta):
            self.beta = Constant(float(self.beta))
        if not isinstance(self.beta, tuple(SCHEDULES.values())):
            raise ValueError(
                f"beta must be a number or a beta schedule ({', '.join(SCHEDULES)}), "
                f"got {self.beta!r}"
            )
        if not isinstance(self.policy, str) or self.policy not in POLICIES:
            raise ValueError(
                f"unknown learning-rate policy {self.policy!r}; choose one of {', '.join(POLICIES)}"
            )
        if not _is_integer(self.epochs) or self.epochs < 1:
            raise ValueError(
                f"a stage needs at least one epoch: epochs must be an integer >= 1, "
                f"got {self.epochs!r}"
            )
        _check_numbers(
            "",
            lr=(self.lr, lambda v: v > 0, "a learning rate > 0"),
            decorrelation=(self.decorrelation, lambda v: v >= 0, "a weight >= 0"),
        )
        for name in ("decoder_only", "while_redundant"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("compare_with", "start_from"):
            value = getattr(self, name)
            if value is not None and not (_is_integer(value) and value >= 1):
                raise ValueError(
                    f"{name} must be the number of an earlier stage (from 1), got {value!r}"
                )
        if self.encode_steps is not None:
            if not (_is_integer(self.encode_steps) and self.encode_steps >= 1):
                raise ValueError(
                    f"encode_steps must be a number of displacements >= 1, got "
                    f"{self.encode_steps!r}"
                )
            if not self.decoder_only:
                raise ValueError("encode_steps belongs to a decoder_only stage")

    def to_dict(self) -> dict:
        beta = schedule_to_dict(self.beta)
        out = {"epochs": self.epochs, "beta": beta, "lr": self.lr, "policy": self.policy}
        # Absent when unused, as in plans written before they existed.
        if self.decorrelation:
            out["decorrelation"] = self.decorrelation
        for name in ("decoder_only", "while_redundant"):
            if getattr(self, name):
                out[name] = True
        for name in ("compare_with", "start_from", "encode_steps"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> Stage:
        if not isinstance(values, dict):
            raise ValueError(
                "a stage is a mapping (epochs, beta, lr, policy, decorrelation, compare_with, "
                f"start_from, decoder_only, encode_steps, while_redundant), got {values!r}"
            )
        unknown = sorted(map(str, set(values) - {f.name for f in dataclasses.fields(cls)}))
        if unknown:
            raise ValueError(f"unknown stage keys: {', '.join(unknown)}")
        if "epochs" not in values:
            raise ValueError("a stage needs epochs")
        values = dict(values)
        if isinstance(values.get("beta"), dict):
            values["beta"] = schedule_from_dict(values["beta"])
        return cls(**values)


@dataclass
class Plan:
    """The whole schedule: stages run one after the other."""

    stages: list[Stage]

    def __post_init__(self):
        for number, stage in enumerate(self.stages, start=1):
            for name in ("compare_with", "start_from"):
                value = getattr(stage, name)
                if value is not None and value >= number:
                    raise ValueError(
                        f"stage {number}: {name} must name an earlier stage, got {value}"
                    )
            if stage.while_redundant and number < len(self.stages):
                raise ValueError(
                    f"stage {number}: only the last stage can be while_redundant (it ends "
                    "training when no latent is redundant)"
                )
            if stage.compare_with is None:
                continue
            earlier = self.stages[stage.compare_with - 1]
            if not (
                isinstance(stage.beta, Constant)
                and isinstance(earlier.beta, Constant)
                and stage.beta == earlier.beta
            ):
                raise ValueError(
                    f"stage {number}: compare_with={stage.compare_with} compares held-out "
                    f"losses, so both stages need the same constant beta"
                )

    def compared_stage(self, epoch: int) -> int | None:
        """The stage (from 1) whose weights compete with the weights after ``epoch`` (counted
        from 1), or None: only at the end of a stage with ``compare_with``."""
        ends = self.stage_ends()
        if epoch not in ends:
            return None
        return self.stages[ends.index(epoch)].compare_with

    def ends_when_minimal(self, epoch: int) -> bool:
        """Whether training ends after ``epoch`` epochs (counted from 1) if no latent is
        redundant: the next epoch belongs to a ``while_redundant`` stage."""
        return epoch < self.epochs and self.stages[self.locate(epoch)[0]].while_redundant

    def branch_start(self, epoch: int) -> int | None:
        """The stage (from 1) whose final weights the epoch ``epoch`` (counted from 0) starts
        from, or None: only at the start of a stage with ``start_from``."""
        starts = [0, *self.stage_ends()[:-1]]
        if epoch not in starts:
            return None
        return self.stages[starts.index(epoch)].start_from

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
        """Stage index, beta, learning rate, Adam beta1, decorrelation weight, whether the
        stage trains the decoder only and from which prefix, at a fractional epoch (from 0)."""
        i, local = self.locate(epoch)
        stage = self.stages[i]
        if stage.policy == "one-cycle":
            lr, momentum = one_cycle(min(local / stage.epochs, 1.0), stage.lr)
        else:
            lr, momentum = stage.lr, 0.9
        return {
            "stage": i,
            "beta": stage.beta(local),
            "lr": lr,
            "momentum": momentum,
            "decorrelation": stage.decorrelation,
            "decoder_only": stage.decoder_only,
            "encode_steps": stage.encode_steps,
        }

    def scaled_lr(self, lr: float) -> Plan:
        """This plan with the first stage's peak learning rate ``lr`` and every other stage's
        scaled by the same factor."""
        factor = lr / self.stages[0].lr
        return Plan([dataclasses.replace(s, lr=s.lr * factor) for s in self.stages])

    def to_dict(self) -> dict:
        return {"stages": [s.to_dict() for s in self.stages]}

    @classmethod
    def from_dict(cls, values: dict) -> Plan:
        """The plan written by :meth:`to_dict`. A KeyError without ``stages``; a ValueError
        naming the stage (counted from 1, as training reports them) and its key otherwise."""
        stages = values["stages"]
        if not isinstance(stages, list) or not stages:
            raise ValueError("a plan needs a non-empty list of stages")
        parsed = []
        for number, stage in enumerate(stages, start=1):
            try:
                parsed.append(Stage.from_dict(stage))
            except ValueError as err:
                raise ValueError(f"stage {number}: {err}") from None
        return cls(parsed)


# The end of both presets, after the annealing to beta = 4e-3 (stages 1-6): 6 more epochs at
# 4e-3 with a peak learning rate of 3e-4 (stage 7, A: at 1e-3 SBM's extra latents hardly die,
# at 3e-4 they go in two epochs). Then a branch: 2 epochs at 8e-3 and 4 back at 4e-3 (stage 9,
# B) against 6 more at 4e-3 from A (stage 10, A'), the lower held-out loss kept. B leaves the
# local minimum with a latent too many that some seeds reach (FBM, data and seed 7), A' keeps
# a weak latent the loss needs (SBM's second, worth 0.0005 nat, which 8e-3 kills); both have
# had as many epochs. Last, up to 8 more epochs at 4e-3 and 3e-4 (stage 11) while more latents
# survive than the representation has dimensions, each collapsing the redundant copies: none
# for a run that ends the branch minimal; one for SBM, data and seed 2, whose A' kept a copy
# that the loss alone did not remove. docs/training-recipes.md has the measurements.
MINIMAL_ENDING = [
    Stage(6, 4e-3, 3e-4),
    Stage(2, 8e-3),
    Stage(4, 4e-3, 3e-4),
    Stage(6, 4e-3, 3e-4, start_from=7, compare_with=9),
    Stage(8, 4e-3, 3e-4, while_redundant=True),
]

PRESETS = {
    # The paper's plan (64 epochs at beta = 0, then 16 epochs at each beta, a one-cycle policy
    # per stage; 144 epochs, meant for a GPU; docs/plans/paper-144.json alone), then the
    # minimal ending (162 epochs, 170 when a latent is redundant at the end of the branch).
    "paper": Plan(
        [Stage(64, 0.0)] + [Stage(16, b) for b in (1e-4, 6e-4, 1e-3, 2e-3, 4e-3)] + MINIMAL_ENDING
    ),
    # For 2 CPU cores (46 epochs, ~37 min on a `paper` set, up to 54): the paper's stages shortened
    # 5-fold (13 epochs at beta = 0, 3 at each beta, as the first shipped models had), then the
    # minimal ending. Shorter plans left SBM unconverged.
    "quick": Plan(
        [Stage(13, 0.0)] + [Stage(3, b) for b in (1e-4, 6e-4, 1e-3, 2e-3, 4e-3)] + MINIMAL_ENDING
    ),
}
