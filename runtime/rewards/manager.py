"""The reward seam: decoded responses and their rows' ground truth in, one score per response out.

Three sources, chosen once from the config: the remote reward server (`reward_api.enable`), a custom function
(`custom_reward_function.path` and `.name`, verl's signature), or the bundled rule functions picked by each row's
`data_source`. A function may return a float or, as verl allows, a dict with a `score` key; other numeric keys of
such dicts are averaged into `reward/<key>/mean` metrics. Every `reward_api.save_freq` steps the remote path's
records (prompt, response, ground truth, score, the server's reply) go to `reward_api.save_dir` as JSONL through
the client's atomic `save_jsonl`; a step that fails on unscorable samples is saved too, for the post-mortem.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ScoreFn = Callable[..., Any]


class RewardManager:
    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.remote = None
        self.fn: ScoreFn | None = None
        if cfg.reward_api.enable:
            from rlc_runtime.rewards.remote import RemoteRewardClient

            self.remote = RemoteRewardClient.from_config(cfg.reward_api)
        elif cfg.custom_reward_function.path:
            from rlc_runtime.rewards.custom import load_reward_function

            self.fn = load_reward_function(cfg.custom_reward_function.path, cfg.custom_reward_function.name)
        else:
            from rlc_runtime.rewards.rules import compute_score

            self.fn = compute_score

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
        for sample in samples:
            result = self.fn(sample["data_source"], sample["response"], sample["ground_truth"],
                             sample.get("extra_info"))
            for values, key in zip(components, component_keys, strict=True):
                values.append(_component(result, key))
            if isinstance(result, dict):
                for key, value in result.items():
                    if key != "score" and isinstance(value, int | float):
                        extras[key].append(float(value))
                result = result["score"]
            scores.append(float(result))
        return scores, {f"reward/{key}/mean": sum(v) / len(v) for key, v in extras.items()}, components

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
