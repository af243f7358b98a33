"""Result files, claims and their spreads, timing repeats."""

import json

import pytest

from scaling_ml import BookError
from scaling_ml import measure


def test_holds_is_computed_from_the_numbers():
    assert measure.Claim("speed-up", 1.9, "x", 1.8).holds
    assert not measure.Claim("speed-up", 1.7, "x", 1.8).holds
    assert measure.Claim("peak memory", 3.2, "GiB", 4, "<=").holds
    with pytest.raises(BookError, match="goal_op"):
        measure.Claim("x", 1, "x", 1, "=>")


def test_a_claim_holds_only_when_its_whole_spread_meets_the_goal():
    assert measure.Claim("faster", 1.07, "x", 1, ">", spread=[1.02, 1.10]).holds
    assert not measure.Claim("faster", 1.07, "x", 1, ">", spread=[0.98, 1.10]).holds
    assert not measure.Claim("bounded", 1.05, "x", 1.1, "<=", spread=[1.0, 1.12]).holds
    with pytest.raises(BookError, match="outside its spread"):
        measure.Claim("faster", 1.5, "x", 1, ">", spread=[1.02, 1.10])


def test_ratio_spread_excludes_one_only_when_the_ranges_do_not_overlap():
    assert measure.ratio_spread([2.0, 2.2], [1.0, 1.1]) == pytest.approx([2.0 / 1.1, 2.2])
    low, high = measure.ratio_spread([1.0, 1.3], [1.1, 1.2])
    assert low < 1 < high
    with pytest.raises(BookError):
        measure.ratio_spread([1.0], [])


def test_results_round_trip_with_machine_and_versions(tmp_path):
    claims = [measure.Claim("speed-up", 1.9, "x", 1.8)]
    path = measure.write_results("example", claims, runs=[{"seconds": 1.0}], results_dir=tmp_path)
    document = measure.load_results("example", results_dir=tmp_path)
    assert path == tmp_path / "example.json"
    assert document["benchmark"] == "example"
    assert document["machine"]["cores"] >= 1 and document["machine"]["memory_gib"] > 0
    assert document["versions"]["dask-ml"] == "2025.1.0"
    assert document["claims"][0]["holds"] is True


def test_a_hand_edited_holds_is_caught(tmp_path):
    path = measure.write_results("edited", [measure.Claim("speed-up", 1.2, "x", 1.8)], runs=[],
                                 results_dir=tmp_path)
    document = json.loads(path.read_text())
    document["claims"][0]["holds"] = True
    path.write_text(json.dumps(document))
    with pytest.raises(BookError, match="contradict"):
        measure.load_results("edited", results_dir=tmp_path)
    document["claims"][0].update(measured=1.9, spread=[1.7, 2.0])  # the spread reaches below the goal
    path.write_text(json.dumps(document))
    with pytest.raises(BookError, match="contradict"):
        measure.load_results("edited", results_dir=tmp_path)


def test_missing_results_say_how_to_make_them(tmp_path):
    with pytest.raises(BookError, match="make bench"):
        measure.load_results("nothing", results_dir=tmp_path)


def test_time_repeats_counts_the_calls():
    calls = []
    seconds = measure.time_repeats(lambda: calls.append(1), repeats=3)
    assert len(seconds) == 3 and len(calls) == 3 and all(value >= 0 for value in seconds)
    with pytest.raises(BookError):
        measure.time_repeats(lambda: None, repeats=0)


def test_format_claim_says_whether_it_holds():
    holds = measure.Claim("speed-up", 1.8234, "x", 1.8, ">=")
    missed = measure.Claim("ratio", 0.885, "ratio", 0.9, ">=")
    assert measure.format_claim(holds) == "HOLDS  speed-up: 1.823 x (goal >= 1.8)"
    assert measure.format_claim(missed) == "MISSED ratio: 0.885 ratio (goal >= 0.9)"


def test_accuracy_difference_has_a_spread_that_excludes_zero_only_for_a_real_difference():
    import numpy as np

    rng = np.random.default_rng(1)
    labels_right = rng.random(20_000) < 0.75
    same = measure.accuracy_difference(labels_right, labels_right.copy())
    assert same == (0.0, [0.0, 0.0])
    noisy = rng.random(20_000) < 0.75  # another model as good on average, wrong on other rows
    difference, (low, high) = measure.accuracy_difference(labels_right, noisy)
    assert low <= difference <= high and low < 0 < high
    assert measure.difference_verdict([low, high]) == measure.NO_DIFFERENCE
    better = labels_right | (rng.random(20_000) < 0.2)
    difference, spread = measure.accuracy_difference(better, labels_right)
    assert difference == pytest.approx(better.mean() - labels_right.mean())
    assert spread[0] > 0 and measure.difference_verdict(spread, "more accurate") == "more accurate"
    assert measure.difference_verdict([-0.02, -0.01], "more", "less") == "less"
    # The same answer as resampling the rows themselves.
    rows = rng.integers(0, 20_000, size=(300, 20_000))
    resampled = (better[rows].mean(axis=1) - labels_right[rows].mean(axis=1))
    assert np.percentile(resampled, 2.5) == pytest.approx(spread[0], abs=0.002)
    with pytest.raises(BookError, match="the same rows"):
        measure.accuracy_difference([True, False], [True])


def test_compare_accuracies_says_the_difference_its_spread_and_the_verdict():
    import numpy as np

    rng = np.random.default_rng(2)
    right = rng.random(10_000) < 0.7
    line = measure.compare_accuracies(right | (rng.random(10_000) < 0.5), right, "trees", "linear")
    assert line.startswith("trees minus linear: +") and line.endswith("trees is more accurate")
    assert "over resamples of the 10,000 test rows" in line
    assert measure.compare_accuracies(right, right.copy(), "a", "b").endswith(measure.NO_DIFFERENCE)


@pytest.mark.parametrize("path", sorted(measure.results_path("x").parent.glob("*.json")),
                         ids=lambda path: path.stem)
def test_every_committed_claim_holds(path):
    """The book states only what its benchmarks measured: a claim that missed on the committed runs
    is either measured again (make bench) or no longer a claim, and its comparison is printed with
    its verdict instead."""
    document = measure.load_results(path.stem)
    missed = [claim["name"] for claim in document["claims"] if not claim["holds"]]
    assert document["claims"] and not missed, f"{path.name}: claims that do not hold: {missed}"
