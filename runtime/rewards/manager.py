"""The reward seam: decoded responses and their rows' ground truth in, one score per response out.

Three sources, chosen once from the config: the remote reward server (`reward_api.enable`), a custom function
(`custom_reward_function.path` and `.name`, verl's signature), or the bundled rule functions picked by each row's
`data_source`. With the rule functions, as in verl's `default_compute_score`, rows of a code-contest source
(`rules.CODE_SOURCES`) go to the SandboxFusion service when `reward_model.sandbox_fusion.url` is set (the compiler
copies verl 0.9.1's `reward.sandbox_fusion` there); the whole batch's test cases are sent at once, at most
`max_concurrent` in flight, and a sample with a case the service failed to run is counted in
`reward/sandbox_fusion/failed_samples`. A function may return a float or, as verl allows, a dict with a `score`
key; other numeric keys of such dicts are averaged into `reward/<key>/mean` metrics. Every `reward_api.save_freq`
steps the remote path's records (prompt, response, ground truth, score, the server's reply) go to
`reward_api.save_dir` as JSONL through the client's atomic `save_jsonl`; a step that fails on unscorable samples
is saved too, for the post-mortem.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ScoreFn = Callable[..., Any]
logger = logging.getLogger(__name__)


class RewardManager:
    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.remote = None
        self.fn: ScoreFn | None = None
        self.sandbox = None
        if cfg.reward_api.enable:
            from rlc_runtime.rewards.remote import RemoteRewardClient

            self.remote = RemoteRewardClient.from_config(cfg.reward_api)
        elif cfg.custom_reward_function.path:
            from rlc_runtime.rewards.custom import load_reward_function

            self.fn = load_reward_function(cfg.custom_reward_function.path, cfg.custom_reward_function.name)
        else:
            from rlc_runtime.rewards.rules import compute_score

            self.fn = compute_score
            sandbox = cfg.reward_model.sandbox_fusion
            if sandbox.url:
                from rlc_runtime.rewards.sandbox_fusion import SandboxFusionClient

                self.sandbox = SandboxFusionClient(sandbox.url, sandbox.max_concurrent, sandbox.memory_limit_mb)

    def score(self, samples: list[dict[str, Any]], step: int | None,
              component_keys: Sequence[str] = ()) -> tuple[list[float], dict[str, float], list[list[float]]]:
        """Scores in the order of `samples` (each: response, data_source, ground_truth, extra_info, ...), reward
        metrics, and per `component_keys` key the values the function returned under it, in sample order (GDPO's
        reward components); `step` is None for validation."""
        if self.remote is not None:
            if component_keys:
                raise ValueError("reward components (algorithm.gdpo_reward_keys) come from a reward function's "
                                 "returned dict; the remote reward server returns one score per response")
            return *self._score_remote(samples, step), []
        scores, extras = [], defaultdict(list)
        components: list[list[float]] = [[] for _ in component_keys]
        sandboxed, metrics = self._score_sandboxed(samples)
        for i, sample in enumerate(samples):
            result = sandboxed[i] if i in sandboxed else self.fn(
                sample["data_source"], sample["response"], sample["ground_truth"], sample.get("extra_info"))
            for values, key in zip(components, component_keys, strict=True):
                values.append(_component(result, key))
            if isinstance(result, dict):
                for key, value in result.items():
                    if key != "score" and isinstance(value, int | float):
                        extras[key].append(float(value))
                result = result["score"]
            scores.append(float(result))
        return scores, metrics | {f"reward/{key}/mean": sum(v) / len(v) for key, v in extras.items()}, components

    def _score_sandboxed(self, samples: list[dict[str, Any]]) -> tuple[dict[int, float], dict[str, float]]:
        """The code-contest samples' scores by index, from the SandboxFusion service (none without one)."""
        if self.sandbox is None:
            return {}, {}
        from rlc_runtime.rewards.rules import CODE_SOURCES
        from rlc_runtime.rewards.sandbox_fusion import NO_CODE_BLOCK

        indices = [i for i, s in enumerate(samples) if s["data_source"] in CODE_SOURCES]
        if not indices:
            return {}, {}
        results = self.sandbox.score([samples[i]["response"] for i in indices],
                                     [samples[i]["ground_truth"] for i in indices])
        failed = [(i, r.error) for i, r in zip(indices, results, strict=True) if r.error]
        if failed:
            logger.warning("SandboxFusion: %d of %d code samples had cases the service did not run (scored as "
                           "failed); first: sample %d: %s", len(failed), len(indices), *failed[0])
        unusable = [(i, r.reason) for i, r in zip(indices, results, strict=True)
                    if r.reason and r.reason != NO_CODE_BLOCK]
        if unusable:  # the row's fault, not the model's: verl scores it 0 too, and says so
            logger.warning("SandboxFusion: %d code samples scored 0 for their test cases; first: sample %d: %s",
                           len(unusable), *unusable[0])
        return ({i: r.score for i, r in zip(indices, results, strict=True)},
                {"reward/sandbox_fusion/failed_samples": float(len(failed))})

    def _score_remote(self, samples: list[dict[str, Any]], step: int | None) -> tuple[list[float], dict[str, float]]:
        from rlc_runtime.rewards.remote import RewardAPIError

        responses = [s["response"] for s in samples]
        try:
            batch = self.remote.score(responses, [s.get("verification_info") for s in samples])
        except RewardAPIError as error:  # keep what the server said about the failed step, then fail it
            self._save(samples, error.batch, step)
            raise
        self._save(samples, batch, step)
        return batch.scores, batch.metrics()

    def _save(self, samples: list[dict[str, Any]], batch: Any, step: int | None) -> None:
        from rlc_runtime.rewards.remote import save_jsonl

        api = self.cfg.reward_api
        if api.save_dir and api.save_freq > 0 and step is not None and step % api.save_freq == 0:
            save_jsonl(Path(api.save_dir) / f"rewards_step_{step}.jsonl", [s.get("prompt_text") for s in samples],
                       [s["response"] for s in samples], [s.get("ground_truth") for s in samples], batch, step)


def _component(result: Any, key: str) -> float:
    if not isinstance(result, dict) or not isinstance(result.get(key), int | float):
        got = f"a dict with keys {sorted(result)}" if isinstance(result, dict) else type(result).__name__
        raise ValueError(f"algorithm.gdpo_reward_keys names {key!r}, but the reward function returned {got}: it "
                         f"must return a dict with a number under each of gdpo_reward_keys")
    return float(result[key])
