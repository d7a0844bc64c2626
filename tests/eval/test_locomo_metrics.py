from __future__ import annotations

import pytest

from backend.eval.locomo_metrics import percentile, recall_at_k, recall_summary


def test_recall_at_k_by_hand() -> None:
    ranked = ["D1:1", "D2:4", "D3:1", "D1:2", "D5:5"]
    assert recall_at_k(ranked, ["D3:1"], 1) == 0.0
    assert recall_at_k(ranked, ["D3:1"], 3) == 1.0
    assert recall_at_k(ranked, ["D1:1", "D1:2", "D9:9"], 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, ["D1:1", "D1:2", "D9:9"], 4) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, ["D1:1", "D1:2", "D9:9"], 25) == pytest.approx(2 / 3)
    assert recall_at_k(["D1:1", "D1:1"], ["D1:1", "D1:2"], 2) == 0.5  # a repeat counts once
    with pytest.raises(ValueError, match="evidence"):
        recall_at_k(ranked, [], 1)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(ranked, ["D1:1"], 0)


def test_recall_summary_is_the_mean_over_questions() -> None:
    rows = [
        (["a", "b", "c", "d", "e", "f"], ["f"]),  # found at rank 6
        (["x", "y"], ["x", "z"]),  # half found at rank 1
    ]
    summary = recall_summary(rows).model_dump(by_alias=True)
    assert summary == {
        "n": 2,
        "recall@1": 0.25,
        "recall@5": 0.25,
        "recall@10": 0.75,
        "recall@25": 0.75,
    }
    assert recall_summary([]).recall_10 == 0.0


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([10.0] * 19 + [100.0], 95) == pytest.approx(14.5)
    assert percentile([], 50) == 0.0
