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
