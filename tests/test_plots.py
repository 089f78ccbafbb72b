"""Schedules can be plotted: the drawn staircase is the schedule's own target at every step."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from pruneaware import schedules
from pruneaware.report.plots import plot_schedule


def test_plot_schedule_draws_the_target_at_every_step() -> None:
    schedule = schedules.Polynomial(0.0, 0.9, begin=10, end=50, every=10)
    axis = plot_schedule(schedule, total_steps=60)
    line = axis.get_lines()[0]
    assert list(line.get_xdata()) == list(range(61))
    assert list(line.get_ydata()) == [schedule.target(step) for step in range(61)]
    assert line.get_ydata()[-1] == 0.9
