"""``fedsim.metrics``: each reduction by hand, and the seam — a metric added to ``METRICS``
reaches summary.json, summary.md and the sweep tables with no other change."""

from __future__ import annotations

import pytest

from fedsim import metrics, report, results
from fedsim.metrics import Metric

ROUNDS = [{"round": 1, "loss": 3.0, "x": None}, {"round": 2, "loss": None}, {"round": 3, "loss": 1.0}]


@pytest.mark.parametrize("reduce, expected", [("last", 1.0), ("max", 3.0), ("mean", 2.0), ("initial", 9.0)])
def test_each_reduction_by_hand(reduce, expected):
    # last: round 3's 1.0; max of (3, 1); mean over the rounds with a value (3 + 1) / 2; initial: the initial model's
    assert Metric("m", "loss", reduce).of_run(ROUNDS, {"loss": 9.0}) == expected


def test_a_metric_with_no_value_anywhere_is_none_and_a_bad_reduction_is_refused():
    for reduce in ("last", "max", "mean", "initial"):
        assert Metric("m", "x", reduce).of_run(ROUNDS, None) is None
    assert Metric("m", "loss", "last").of_run([], None) is None
    with pytest.raises(ValueError, match="reduce='median'; allowed: last, max, mean, initial"):
        Metric("m", "loss", "median")


def test_a_new_metric_reaches_the_summary_summary_md_and_the_sweep_tables():
    new = Metric("final_train_loss", "train_loss", "last", "final_loss", "final train loss")
    metrics.METRICS.append(new)  # the one entry; nothing else is told
    try:
        summary = report.summarize([{"round": 1, "train_loss": 0.75}], initial=None, wall_s=1.0, extra={})
        assert summary["final_train_loss"] == 0.75
        assert "| final_train_loss | 0.750 |" in report.summary_markdown(summary, [])
        assert results.table_metrics()[-1] == ("final_loss", "final_train_loss", "final train loss")
    finally:
        metrics.METRICS.remove(new)
