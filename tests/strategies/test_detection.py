"""Detection bookkeeping (strategies/detection.py): TP, FP, TN, FN and the rates from what a rule
accepted against who was malicious, on hand-counted rounds."""

import pytest


def test_detection_counts_on_a_hand_counted_round():
    from strategies.detection import detection_counts

    # rows 0, 1 malicious; the rule accepted rows 1 and 2: row 0 flagged (TP), row 1 missed
    # (FN), rows 3, 4 honest but flagged (FP), row 2 honest and accepted (TN)
    d = detection_counts([1, 2], [True, True, False, False, False], 5)
    assert d == {"tp": 1, "fp": 2, "tn": 1, "fn": 1, "tpr": 0.5, "fpr": 2 / 3,
                 "precision": 1 / 3, "recall": 0.5}
    # three malicious rows, one of them accepted: TP 2 (rows 0, 1), FN 1 (row 2), FP 1 (row 4)
    assert detection_counts([2, 3], [True, True, True, False, False], 5) == {
        "tp": 2, "fp": 1, "tn": 1, "fn": 1, "tpr": 2 / 3, "fpr": 0.5, "precision": 2 / 3, "recall": 2 / 3}
    assert detection_counts([0, 1], [False, False], 2) == {
        "tp": 0, "fp": 0, "tn": 2, "fn": 0, "tpr": None, "fpr": 0.0, "precision": None, "recall": None}
    with pytest.raises(ValueError, match=r"^malicious has 2 entries, expected 3$"):
        detection_counts([0], [True, False], 3)
    with pytest.raises(ValueError, match=r"^accepted indices \[3, 7\] are outside \[0, 3\)$"):
        detection_counts([0, 3, 7], [True, False, False], 3)
