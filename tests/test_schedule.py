"""Tests of minrep.schedule: beta schedules, the one-cycle policy, stages, plans and presets."""

import json
from pathlib import Path

import numpy as np
import pytest

from minrep import schedule
from minrep.schedule import PRESETS, Constant, GeometricRamp, LinearRamp, Plan, Stage


def test_beta_schedules():
    assert Constant(3e-3)(7.5) == 3e-3
    ramp = LinearRamp(1e-4, 5e-3, 4)
    assert ramp(0) == 1e-4 and ramp(2) == pytest.approx(2.55e-3) and ramp(9) == 5e-3
    geometric = GeometricRamp(1e-4, 1e-2, 2)
    assert geometric(1) == pytest.approx(1e-3) and geometric(5) == pytest.approx(1e-2)
    for beta in (ramp, geometric, Constant(0.5)):
        assert schedule.schedule_from_dict(schedule.schedule_to_dict(beta)) == beta
        values = [beta(e) for e in np.linspace(0, 6, 50)]
        assert np.all(np.diff(values) >= 0)  # annealing only ever increases beta


def test_unknown_schedules_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown beta schedule 'cosine'"):
        schedule.schedule_from_dict({"kind": "cosine", "value": 1.0})
    with pytest.raises(TypeError, match="not a registered beta schedule"):
        schedule.schedule_to_dict(lambda epoch: 0.0)


def test_one_cycle_shape():
    peak = 1e-3
    assert schedule.one_cycle(0.0, peak) == pytest.approx((peak / 25, 0.95))
    assert schedule.one_cycle(0.25, peak) == pytest.approx((peak, 0.85))
    assert schedule.one_cycle(1.0, peak) == pytest.approx((peak / 1e5, 0.95))
    rates = [schedule.one_cycle(f, peak)[0] for f in np.linspace(0, 1, 101)]
    assert max(rates) == pytest.approx(peak) and np.argmax(rates) == 25


def test_plan_stages_and_presets():
    paper = PRESETS["paper"]
    # The paper's 144 epochs, then the same minimal ending as the quick preset's
    assert paper.epochs == 170 and paper.stage_ends()[:6] == [64, 80, 96, 112, 128, 144]
    assert paper.stages[6:] == PRESETS["quick"].stages[6:]
    assert paper.compared_stage(162) == 9 and paper.branch_start(156) == 7
    assert paper.at(10)["beta"] == 0 and paper.at(64.5)["beta"] == 1e-4
    assert paper.at(143.9)["beta"] == 4e-3
    assert paper.at(64.0)["lr"] == pytest.approx(1e-3 / 25)  # a new one-cycle per stage
    assert paper.at(64.0)["stage"] == 1 and paper.locate(70.5) == (1, 6.5)
    for name, plan in PRESETS.items():
        assert plan.at(0)["beta"] == 0.0, name  # beta = 0 first, until reconstruction converges
        # beta only rises up to the stage that later branches start from or compare with
        named = [v for st in plan.stages for v in (st.compare_with, st.start_from) if v]
        anneal = plan.stages[: min(named, default=len(plan.stages))]
        for before, after in zip(anneal, anneal[1:], strict=False):
            assert after.beta(0) >= before.beta(before.epochs), name
    quick = PRESETS["quick"]
    assert quick.epochs == 54 and quick.compared_stage(46) == 9 and quick.compared_stage(40) is None
    # After the branch, more epochs only while a latent is redundant.
    assert quick.ends_when_minimal(46) and not quick.ends_when_minimal(45)
    assert quick.branch_start(40) == 7 and quick.branch_start(36) is None
    with pytest.raises(ValueError, match="learning-rate policy"):
        Stage(1, 0.0, policy="cyclic")
    with pytest.raises(ValueError, match="at least one epoch"):
        Stage(0, 0.0)


def test_documented_plans_load():
    # The plans the docs name for reproduction (the paper's 144 epochs, the first shipped
    # models' 28) are the presets' annealing parts.
    plans = Path(__file__).resolve().parents[1] / "docs" / "plans"
    for name, preset, epochs in (("paper-144", "paper", 144), ("quick-28", "quick", 28)):
        plan = Plan.from_dict(json.loads((plans / f"{name}.json").read_text()))
        assert plan.epochs == epochs and plan.stages == PRESETS[preset].stages[:6], name


def test_plan_json_round_trip_and_bad_plans():
    plan = Plan([Stage(2, 0.0), Stage(3, GeometricRamp(1e-5, 4e-3, 3), 2e-4, "constant")])
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    assert again.at(3.5)["beta"] == pytest.approx(plan.stages[1].beta(1.5))
    assert Plan.from_dict(PRESETS["paper"].to_dict()) == PRESETS["paper"]
    stage = plan.to_dict()["stages"][0]
    with pytest.raises(ValueError, match="unknown stage keys: epoch"):
        Plan.from_dict({"stages": [{**stage, "epoch": 2}]})
    with pytest.raises(ValueError, match="non-empty list of stages"):
        Plan.from_dict({"stages": []})
    with pytest.raises(KeyError):
        Plan.from_dict({})


def test_decorrelation_weight_per_stage():
    plan = Plan([Stage(2, 0.0), Stage(3, 4e-3, decorrelation=0.01)])
    assert plan.at(1.0)["decorrelation"] == 0.0 and plan.at(2.5)["decorrelation"] == 0.01
    written = plan.to_dict()["stages"]
    assert "decorrelation" not in written[0]  # plans written before it read the same
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    with pytest.raises(ValueError, match="decorrelation must be a weight >= 0"):
        Stage(1, 0.0, decorrelation=-1.0)


def test_scaled_learning_rate_keeps_the_ratios_between_stages():
    plan = Plan([Stage(2, 0.0, 1e-3), Stage(2, 1e-3, 2e-4, "constant")])
    faster = plan.scaled_lr(3e-3)
    assert [s.lr for s in faster.stages] == pytest.approx([3e-3, 6e-4])
    assert [s.beta for s in faster.stages] == [s.beta for s in plan.stages]
    assert faster.at(0.5)["lr"] == pytest.approx(3 * plan.at(0.5)["lr"])
    assert plan.stages[0].lr == 1e-3  # the original is untouched


def test_decoder_only_stages_round_trip_and_are_checked():
    stage = Stage(3, 4e-3, 3e-4, decoder_only=True)
    assert stage.to_dict()["decoder_only"] is True
    assert "decoder_only" not in Stage(3, 4e-3).to_dict()  # plans written before it existed
    assert Stage.from_dict(stage.to_dict()) == stage
    plan = Plan([Stage(1, 0.0), stage])
    assert not plan.at(0.5)["decoder_only"] and plan.at(1.5)["decoder_only"]
    with pytest.raises(ValueError, match="decoder_only must be true or false"):
        Stage(1, decoder_only="yes")
    prefix = Stage(3, 4e-3, 3e-4, decoder_only=True, encode_steps=399)
    assert Stage.from_dict(prefix.to_dict()) == prefix
    assert "encode_steps" not in stage.to_dict()
    assert Plan([stage, prefix]).at(3.5)["encode_steps"] == 399
    with pytest.raises(ValueError, match="encode_steps belongs to a decoder_only stage"):
        Stage(1, encode_steps=399)
    with pytest.raises(ValueError, match="encode_steps must be"):
        Stage(1, decoder_only=True, encode_steps=0)


def test_while_redundant_stages_round_trip_and_come_last():
    stage = Stage(8, 4e-3, 3e-4, while_redundant=True)
    assert stage.to_dict()["while_redundant"] is True
    assert "while_redundant" not in Stage(3, 4e-3).to_dict()  # plans written before it
    plan = Plan([Stage(2, 0.0), stage])
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    # Training may end after epoch 2 (the stage is next) and after each of its epochs but the
    # last, where the plan ends anyway.
    assert [plan.ends_when_minimal(e) for e in (1, 2, 5, 9, 10)] == [False, True, True, True, False]
    with pytest.raises(ValueError, match="stage 1: only the last stage can be while_redundant"):
        Plan([stage, Stage(2, 0.0)])
    with pytest.raises(ValueError, match="while_redundant must be true or false"):
        Stage(1, while_redundant=1)
