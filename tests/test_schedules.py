"""Sparsity schedules: update-step grids, staircase targets, closed forms and validation."""

from __future__ import annotations

import math

import pytest

from pruneaware.core.errors import ConfigError
from pruneaware.schedules import Constant, Exponential, Iterative, Linear, OneShot, Polynomial, check_sparsity

RAMPS = [Linear, Polynomial, Exponential]


def all_schedules():
    return [
        OneShot(0.7, at=5),
        OneShot(0.5, at=0),
        Constant(0.6, begin=3, end=20, every=4),
        Linear(0.0, 0.9, begin=2, end=30, every=3),
        Linear(0.2, 0.8, begin=0, end=10, every=1),
        Polynomial(0.0, 0.9, begin=4, end=37, every=5),
        Polynomial(0.1, 0.9, begin=0, end=20, every=2, power=2.0),
        Exponential(0.0, 0.95, begin=1, end=26, every=5),
        Exponential(0.3, 0.9, begin=5, end=5, every=1),
        Iterative(keep=0.8, rounds=5, begin=3, every=7),
    ]


# -- update steps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "begin,end,every,expected",
    [
        (0, 10, 2, [0, 2, 4, 6, 8, 10]),
        (0, 10, 3, [0, 3, 6, 9, 10]),
        (5, 5, 1, [5]),
        (5, 5, 7, [5]),
        (2, 7, 100, [2, 7]),
        (1, 4, 1, [1, 2, 3, 4]),
    ],
)
@pytest.mark.parametrize("cls", [Linear, Polynomial, Exponential])
def test_ramp_update_grid_ends_exactly_at_end(cls, begin, end, every, expected):
    schedule = cls(0.0, 0.8, begin=begin, end=end, every=every)
    assert schedule.update_steps() == expected
    assert schedule.last_step == end
    for step in range(0, end + 5):
        assert schedule.is_update_step(step) == (step in expected)


@pytest.mark.parametrize("begin,end,every", [(0, 10, 3), (3, 20, 4), (7, 7, 2), (0, 0, 1)])
def test_constant_update_grid(begin, end, every):
    schedule = Constant(0.5, begin=begin, end=end, every=every)
    steps = schedule.update_steps()
    assert steps[0] == begin and steps[-1] == end
    assert steps == sorted(set(steps))
    assert all(b - a == every for a, b in zip(steps[:-2], steps[1:-1]))
    assert all(b - a <= every for a, b in zip(steps, steps[1:]))


def test_one_shot_and_iterative_update_steps():
    assert OneShot(0.5, at=12).update_steps() == [12]
    assert OneShot(0.5, at=12).last_step == 12
    iterative = Iterative(keep=0.5, rounds=4, begin=10, every=5)
    assert iterative.update_steps() == [10, 15, 20, 25]
    assert iterative.last_step == 25


# -- staircase targets ------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", all_schedules(), ids=lambda s: type(s).__name__)
def test_target_is_a_staircase_that_moves_only_at_update_steps(schedule):
    updates = schedule.update_steps()
    horizon = schedule.last_step + 10
    for step in range(1, horizon):
        if schedule.target(step) != schedule.target(step - 1):
            assert schedule.is_update_step(step), f"target moved at non-update step {step}"
    for step in updates:
        assert schedule.target(step) == pytest.approx(schedule.value_at(step))


@pytest.mark.parametrize("schedule", all_schedules(), ids=lambda s: type(s).__name__)
def test_target_is_zero_before_first_update_and_final_after_last(schedule):
    first, last = schedule.update_steps()[0], schedule.last_step
    for step in range(0, first):
        assert schedule.target(step) == 0.0
    for step in range(last, last + 20):
        assert schedule.target(step) == pytest.approx(schedule.final)
    assert 0.0 <= schedule.final < 1.0


@pytest.mark.parametrize("schedule", all_schedules(), ids=lambda s: type(s).__name__)
def test_target_never_decreases(schedule):
    values = [schedule.target(step) for step in range(schedule.last_step + 10)]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("cls", RAMPS)
def test_ramp_starts_at_initial_and_ends_at_final(cls):
    schedule = cls(0.2, 0.85, begin=4, end=40, every=6)
    assert schedule.target(3) == 0.0
    assert schedule.target(4) == pytest.approx(0.2)
    assert schedule.target(40) == pytest.approx(0.85)
    assert schedule.final == pytest.approx(0.85)
    values = [schedule.value_at(step) for step in schedule.update_steps()]
    assert all(b > a for a, b in zip(values, values[1:])), "strictly increasing between distinct updates"


def test_linear_values_at_update_steps():
    schedule = Linear(0.0, 0.8, begin=10, end=50, every=10)
    for step, expected in zip([10, 20, 30, 40, 50], [0.0, 0.2, 0.4, 0.6, 0.8]):
        assert schedule.target(step) == pytest.approx(expected)
        assert schedule.target(step + 9 if step < 50 else step + 100) == pytest.approx(expected)


@pytest.mark.parametrize("initial,final,begin,end,every", [(0.0, 0.9, 0, 100, 10), (0.05, 0.95, 7, 52, 5), (0.0, 0.5, 3, 17, 3)])
def test_cubic_matches_zhu_gupta(initial, final, begin, end, every):
    schedule = Polynomial(initial, final, begin=begin, end=end, every=every)
    assert schedule.power == 3.0
    for t in schedule.update_steps():
        expected = final + (initial - final) * (1 - (t - begin) / (end - begin)) ** 3
        assert schedule.target(t) == pytest.approx(expected, abs=1e-12)


def test_polynomial_power_changes_the_curve():
    cubic = Polynomial(0.0, 0.9, begin=0, end=10, every=1)
    quadratic = Polynomial(0.0, 0.9, begin=0, end=10, every=1, power=2.0)
    assert quadratic.value_at(5) == pytest.approx(0.9 - 0.9 * 0.5**2)
    assert cubic.value_at(5) == pytest.approx(0.9 - 0.9 * 0.5**3)
    assert cubic.value_at(5) > quadratic.value_at(5) > Linear(0.0, 0.9, 0, 10).value_at(5)


def test_exponential_density_shrinks_geometrically():
    schedule = Exponential(0.0, 0.99, begin=0, end=40, every=10)
    densities = [1.0 - schedule.target(step) for step in schedule.update_steps()]
    assert densities[0] == pytest.approx(1.0)
    assert densities[-1] == pytest.approx(0.01)
    ratios = [b / a for a, b in zip(densities, densities[1:])]
    for ratio in ratios:
        assert ratio == pytest.approx(0.01 ** (1 / 4))


def test_exponential_from_nonzero_initial():
    schedule = Exponential(0.5, 0.875, begin=0, end=30, every=10)
    densities = [1.0 - schedule.value_at(step) for step in schedule.update_steps()]
    step_ratio = 0.25 ** (1 / 3)
    assert densities == pytest.approx([0.5, 0.5 * step_ratio, 0.5 * step_ratio**2, 0.125])


@pytest.mark.parametrize("keep,rounds", [(0.8, 5), (0.5, 3), (0.9, 1)])
def test_iterative_keeps_fraction_of_survivors_each_round(keep, rounds):
    schedule = Iterative(keep=keep, rounds=rounds, begin=4, every=6)
    for k, step in enumerate(schedule.update_steps(), start=1):
        assert schedule.target(step) == pytest.approx(1 - keep**k)
        assert schedule.target(step + 5) == pytest.approx(1 - keep**k)
    assert schedule.final == pytest.approx(1 - keep**rounds)
    assert schedule.target(10_000) == pytest.approx(1 - keep**rounds)
    assert schedule.target(3) == 0.0


def test_one_shot_jumps_once():
    schedule = OneShot(0.75, at=8)
    assert [schedule.target(step) for step in range(12)] == [0.0] * 8 + [0.75] * 4
    assert schedule.final == 0.75
    assert OneShot(0.3).target(0) == 0.3


def test_constant_holds_its_sparsity_from_begin():
    schedule = Constant(0.6, begin=5, end=25, every=5)
    assert schedule.target(4) == 0.0
    assert all(schedule.target(step) == 0.6 for step in range(5, 40))


def test_schedules_are_pure_functions():
    a, b = Polynomial(0.0, 0.9, 2, 20, 3), Polynomial(0.0, 0.9, 2, 20, 3)
    assert a == b
    assert [a.target(s) for s in range(25)] == [b.target(s) for s in range(25)]
    assert [a.target(s) for s in range(25)] == [a.target(s) for s in range(25)]


# -- validation --------------------------------------------------------------------------------

BAD_SPARSITIES = [1.0, 1.2, -0.1, float("nan"), float("inf")]


def _assert_names(error: pytest.ExceptionInfo, field: str, value: object) -> None:
    message = str(error.value)
    assert field in message
    assert repr(value) in message or str(value) in message
    assert error.value.field == field


@pytest.mark.parametrize("value", BAD_SPARSITIES)
def test_check_sparsity_rejects(value):
    with pytest.raises(ConfigError) as error:
        check_sparsity("some.field", value)
    _assert_names(error, "some.field", value)


@pytest.mark.parametrize("value", [0.0, 0.5, 0.999])
def test_check_sparsity_accepts(value):
    assert check_sparsity("x", value) == value


@pytest.mark.parametrize("value", BAD_SPARSITIES)
@pytest.mark.parametrize(
    "build,field",
    [
        (lambda v: OneShot(v), "schedule.sparsity"),
        (lambda v: Constant(v, 0, 10, 1), "schedule.sparsity"),
        (lambda v: Linear(0.0, v, 0, 10, 1), "schedule.final"),
        (lambda v: Polynomial(0.0, v, 0, 10, 1), "schedule.final"),
        (lambda v: Exponential(0.0, v, 0, 10, 1), "schedule.final"),
        (lambda v: Linear(v, 0.5, 0, 10, 1), "schedule.initial"),
        (lambda v: Polynomial(v, 0.5, 0, 10, 1), "schedule.initial"),
    ],
)
def test_invalid_sparsity_raises_config_error(build, field, value):
    with pytest.raises(ConfigError) as error:
        build(value)
    _assert_names(error, field, value)


@pytest.mark.parametrize("cls", RAMPS)
def test_final_below_initial_raises(cls):
    with pytest.raises(ConfigError) as error:
        cls(0.6, 0.3, 0, 10, 1)
    _assert_names(error, "schedule.final", 0.3)


@pytest.mark.parametrize("cls", [*RAMPS, lambda i, f, b, e, every: Constant(f, b, e, every)])
def test_end_before_begin_raises(cls):
    with pytest.raises(ConfigError) as error:
        cls(0.0, 0.5, 10, 9, 1)
    _assert_names(error, "schedule.end", 9)


@pytest.mark.parametrize("every", [0, -1, -10])
@pytest.mark.parametrize("cls", [*RAMPS, lambda i, f, b, e, every: Constant(f, b, e, every)])
def test_every_below_one_raises(cls, every):
    with pytest.raises(ConfigError) as error:
        cls(0.0, 0.5, 0, 10, every)
    _assert_names(error, "schedule.every", every)


def test_iterative_every_below_one_raises():
    with pytest.raises(ConfigError) as error:
        Iterative(keep=0.5, rounds=3, begin=0, every=0)
    _assert_names(error, "schedule.every", 0)


@pytest.mark.parametrize("cls", RAMPS)
def test_negative_begin_raises(cls):
    with pytest.raises(ConfigError) as error:
        cls(0.0, 0.5, -1, 10, 1)
    _assert_names(error, "schedule.begin", -1)


def test_negative_one_shot_step_raises():
    with pytest.raises(ConfigError) as error:
        OneShot(0.5, at=-3)
    _assert_names(error, "schedule.at", -3)


@pytest.mark.parametrize("keep", [0.0, 1.0, -0.5, 1.5, float("nan")])
def test_iterative_keep_outside_open_unit_interval_raises(keep):
    with pytest.raises(ConfigError) as error:
        Iterative(keep=keep, rounds=3, begin=0, every=5)
    _assert_names(error, "schedule.keep", keep)


@pytest.mark.parametrize("rounds", [0, -2])
def test_iterative_rounds_below_one_raises(rounds):
    with pytest.raises(ConfigError) as error:
        Iterative(keep=0.5, rounds=rounds, begin=0, every=5)
    _assert_names(error, "schedule.rounds", rounds)


@pytest.mark.parametrize("power", [0.0, -1.0])
def test_polynomial_power_must_be_positive(power):
    with pytest.raises(ConfigError) as error:
        Polynomial(0.0, 0.5, 0, 10, 1, power=power)
    _assert_names(error, "schedule.power", power)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        OneShot(1.0)
    assert not math.isnan(OneShot(0.5).final)


@pytest.mark.parametrize("power", [float("nan"), float("inf"), 0.0])
def test_polynomial_power_must_be_finite_and_positive(power):
    with pytest.raises(ConfigError) as error:
        Polynomial(0.0, 0.5, 0, 10, 1, power=power)
    assert error.value.field == "schedule.power"
