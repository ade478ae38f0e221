"""The controller's side of reward scoring: rlc's weighted mix and the model ranks' equal slices."""

from rlc_runtime.rewards.scoring import combine, equal_slices


def test_combine_weighs_each_source() -> None:
    assert combine([1.0, 0.0], [0.5, -2.0], 2.0, 0.5) == [2.25, -1.0]


def test_equal_slices_pad_with_the_last_sample() -> None:
    assert equal_slices([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5, 5]]
    assert equal_slices([1, 2], 4) == [[1], [2], [2], [2]]
    assert equal_slices([1, 2, 3, 4], 2) == [[1, 2], [3, 4]]
