"""The pipeline's schedule, against hand-worked timelines: which step's prompts are launched with which policy
version, when the rollout engines are synced, and the staleness each batch is trained with."""

from __future__ import annotations

import pytest

from rlc_runtime.pipeline import GenerationPipeline, InFlightBatch, StalenessError


class Timeline:
    """Records the launches and syncs a pipeline asks for, as the trainer's callbacks would perform them."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.drawn = 0  # prompts drawn so far (the sampler's position)

    def launch(self, step: int) -> InFlightBatch:
        self.events.append(f"launch {step}")
        state = {"position": self.drawn}
        self.drawn += 1
        return InFlightBatch(step, [{"step": step}], lambda: f"batch {step}", state, epoch=0)

    def sync(self) -> None:
        self.events.append("sync")


def run(max_staleness: int, steps: int) -> tuple[list[int], list[str]]:
    timeline = Timeline()
    pipeline = GenerationPipeline(max_staleness, steps, timeline.launch, timeline.sync)
    staleness = []
    for step in range(1, steps + 1):
        generation, batch, lag = pipeline.take(step)
        assert (generation.step, batch) == (step, f"batch {step}")
        staleness.append(lag)
        timeline.events.append(f"train {step}")
        pipeline.updated()
    return staleness, timeline.events


def test_max_staleness_0_is_the_on_policy_loop() -> None:
    staleness, events = run(0, 3)
    assert staleness == [0, 0, 0]
    assert events == ["launch 1", "train 1", "sync", "launch 2", "train 2", "sync", "launch 3", "train 3"]


def test_one_step_off_overlaps_the_next_generation_with_training() -> None:
    staleness, events = run(1, 4)
    assert staleness == [0, 1, 1, 1]
    # step n+1's prompts leave (after the sync of the weights after step n-1) before step n trains
    assert events == ["launch 1", "launch 2", "train 1", "sync", "launch 3", "train 2", "sync", "launch 4",
                      "train 3", "train 4"]


def test_staleness_never_exceeds_the_bound() -> None:
    staleness, events = run(2, 5)
    assert staleness == [0, 1, 2, 2, 2]
    assert events[:4] == ["launch 1", "launch 2", "launch 3", "train 1"]


def test_a_checkpoint_resumes_from_before_the_prompts_in_flight() -> None:
    timeline = Timeline()
    pipeline = GenerationPipeline(2, 10, timeline.launch, timeline.sync)
    pipeline.take(1)  # launches 1, 2, 3; 1 is taken
    assert pipeline.resume_state() == {"position": 1}  # step 2's prompts are drawn again on resume


def test_an_out_of_order_step_is_an_error() -> None:
    pipeline = GenerationPipeline(1, 10, Timeline().launch, lambda: None)
    pipeline.take(1)
    with pytest.raises(StalenessError, match="holds step 2's generation at step 3"):
        pipeline.take(3)
