"""When hf_upload pushes during training (`UploadSchedule`), worked by hand for a sequence of saves."""

from __future__ import annotations

from rlc_runtime.upload import UploadSchedule


def test_every_second_save_and_a_failed_push_retried_at_the_next() -> None:
    schedule = UploadSchedule(every=2)
    assert schedule.due(None) is None  # save 1
    assert schedule.due(None) == "save 2 (every 2)"
    schedule.pushed(False)  # the Hub failed
    assert schedule.due(None) == "retrying the failed push"  # save 3: not due by count, due to retry
    schedule.pushed(True)
    assert schedule.due(None) == "save 4 (every 2)"
    schedule.pushed(True)
    assert schedule.due(None) is None


def test_best_validation_score_so_far() -> None:
    schedule = UploadSchedule(on_best=True)
    assert schedule.improves(0.2) and schedule.due(0.2) == "the best validation score so far (0.2)"
    assert not schedule.improves(0.1) and schedule.due(0.1) is None  # worse
    assert schedule.due(None) is None  # a save without a validation
    assert schedule.due(0.2) is None  # equal is not better
    assert schedule.due(0.5) == "the best validation score so far (0.5)"
    assert not UploadSchedule().improves(0.9)  # on_best_val off
