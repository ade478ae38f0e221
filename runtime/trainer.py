"""The single controller: one process that owns the loop and drives the worker groups through Ray.

A step, in verl's order: sample prompts -> generate n per prompt (each rank its slice) -> decode -> rewards (on
the reward worker, overlapping the log-prob passes) -> old log-probs -> reference log-probs -> values ->
advantages -> critic update -> actor update (after `critic_warmup`) -> weight sync into the rollout engines ->
metrics -> validation every `test_freq` -> checkpoint every `save_freq`. DAPO's dynamic sampling scores each round
of generations at once (it needs the scores to choose the prompts to keep) and generates rounds until the batch is
full; ReMax adds one greedy generation per prompt for its baseline; rollout correction reweights (and may mask)
tokens once the trainer's old log-probs are known. The controller holds only token ids, texts
and per-token tensors; models live in the workers.

Metrics are logged before the checkpoint is written, so a kill between the two loses nothing: the resumed run
starts from the previous checkpoint, drops the metrics of the steps after it, and runs them again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from rlc.config.base import substituted
from rlc.config.checks import uses_critic, uses_reference
from rlc.config.root import RLCConfig
from rlc.memory import read_model_config
from rlc.topology import Topology
from rlc_runtime import checkpoint
from rlc_runtime.batch import TokenBatch, pad_to
from rlc_runtime.checkpoint import CheckpointError
from rlc_runtime.loggers import Tracking, config_to_log
from rlc_runtime.metrics import (
    data_metrics,
    logprob_diff,
    mean_metrics,
    throughput_metrics,
    timed,
    timing_metrics,
    validation_metrics,
    variance_proxy_metrics,
)
from rlc_runtime.perf import mfu, peak_flops
from rlc_runtime.pipeline import GenerationPipeline, InFlightBatch
from rlc_runtime.workers.group import WorkerError, WorkerGroup, connect_ray, wait_groups
from rlc_runtime.workers.rollout import build_batch, engine_requests, sampling_params


class RunError(Exception):
    """A problem the user can fix (the message says what), found while the run is under way."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from rlc_runtime.data import DataError
    from rlc_runtime.models import ModelLoadError
    from rlc_runtime.rewards.custom import RewardFunctionError

    return RunError, CheckpointError, WorkerError, DataError, ModelLoadError, RewardFunctionError


USER_ERRORS = _user_errors()
Scored = tuple[torch.Tensor, dict[str, float], float, torch.Tensor]
"""A step's scores, reward metrics, seconds spent scoring and [K, B] reward components, in generation order."""


def train(cfg: RLCConfig, run_dir: Path, topology: Topology | None = None) -> None:
    """`topology` is plan.json's (what `python -m rlc_runtime` passes); a caller without a plan gets the one the
    compiler would have written, from the same function."""
    Trainer(cfg, run_dir, topology or Topology.from_config(cfg)).fit()


class Trainer:
    def __init__(self, cfg: RLCConfig, run_dir: Path, topology: Topology) -> None:
        from rlc_runtime.algorithms.kl import make_kl_controller
        from rlc_runtime.data import EpochSampler, PromptDataset, load_split
        from rlc_runtime.models import load_tokenizer
        from rlc_runtime.samplers import UserSampler

        self.cfg, self.run_dir, self.topology = cfg, run_dir, topology
        self.world = topology.world_size
        self.use_critic, self.use_ref = uses_critic(cfg), uses_reference(cfg)
        self.tokenizer = load_tokenizer(cfg.actor_rollout_ref.model)
        data, info_column = cfg.data, cfg.reward_api.verification_info_column
        data = with_tool_schemas(data, cfg.actor_rollout_ref.rollout.multi_turn)
        self.train_set = PromptDataset(load_split(data), self.tokenizer, data, info_column)
        self.val_set = PromptDataset(load_split(data, val=True), self.tokenizer, data, info_column) \
            if data.val_files else None
        if len(self.train_set) < data.train_batch_size:
            raise RunError(f"data.train_batch_size {data.train_batch_size} is larger than the "
                           f"{len(self.train_set)} training prompts in {data.train_files}")
        self.sampler = UserSampler.build(data, self.train_set) if data.sampler.class_path else \
            EpochSampler(len(self.train_set), data.train_batch_size, shuffle=data.shuffle,
                         seed=data.seed if data.seed is not None else cfg.trainer.seed)
        self.total_steps = cfg.trainer.total_training_steps or cfg.trainer.total_epochs * self.sampler.batches_per_epoch
        self.kl_ctrl = make_kl_controller(cfg.algorithm.kl_ctrl)
        self.ckpt_root = Path(cfg.trainer.default_local_dir).expanduser()
        self.groups: list[WorkerGroup] = []
        self.pipeline: GenerationPipeline | None = None  # rollout ranks of their own generate ahead, up to a bound
        self.sync_seconds = 0.0  # weight transfers of the step under way
        self.engine_seconds = 0.0  # the rollout engines' own generating time, of the samples collected this step
        self.ipc = topology.rollout_placement == "shared"  # trainer and rollout share one GPU: weights by CUDA IPC
        self.memory_peaks: dict[str, float] = {}  # GiB of the device at peak, per phase, over the run
        self.pushes = _upload_schedule(cfg)  # None: no Hub upload
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.tokenizer.eos_token_id

    # setup and teardown ----------------------------------------------------------------------------------------
    def _start_workers(self) -> None:
        from rlc_runtime.rewards.scoring import start_reward_scoring
        from rlc_runtime.workers.actor import TrainWorker
        from rlc_runtime.workers.rollout import RolloutWorker

        cfg, trainer = self.cfg, self.cfg.trainer
        connect_ray(cfg.ray_kwargs.ray_init.num_cpus, cfg.ray_kwargs.ray_init.runtime_env)
        worker_cfg = cfg.model_copy(deep=True)  # the LR schedule needs the run's length
        for optim in (worker_cfg.actor_rollout_ref.actor.optim, worker_cfg.critic.optim):
            optim.total_training_steps = self.total_steps
        payload = worker_cfg.model_dump(mode="json")
        timeout, topology = cfg.actor_rollout_ref.nccl_timeout, self.topology
        gpu_share = 0.5 if topology.rollout_placement == "shared" else 1.0  # trainer and rollout on one GPU
        self.workers = self._group("train", TrainWorker, topology.train, trainer.device, args=(payload,),
                                   timeout_s=timeout, gpu_share=gpu_share)
        self.reward = start_reward_scoring(self._group, cfg, topology, payload)
        self.workers.call("build")
        self.generators = self.workers  # colocated: the training ranks generate
        if topology.rollout is not None:
            self.generators = self._group("rollout", RolloutWorker, topology.rollout, trainer.device,
                                          args=(payload,), timeout_s=timeout, gpu_share=gpu_share,
                                          beside=self.workers if gpu_share < 1 else None)
            self.generators.call("build")
            self._open_weight_channel(timeout)
            self.pipeline = GenerationPipeline(cfg.algorithm.max_staleness, self.total_steps,
                                               self._launch_generation, self._sync_weights)
        self.peak_flops = peak_flops(self.workers.call("device_name")[0])
        model = cfg.actor_rollout_ref.model
        self.model_config = read_model_config(model.path, model.revision) if self.peak_flops else None
        nodes = self.workers.call("node_id")
        print(f"rlc_runtime: {self.world} train rank(s) on {len(set(nodes))} Ray node(s): "
              + ", ".join(f"rank {rank} on {node[:12]}" for rank, node in enumerate(nodes)), flush=True)

    def _open_weight_channel(self, timeout_s: int) -> None:
        """The bucketed channel from training rank 0 to the rollout ranks, its layout planned once, here: a
        process group of its own, or on one shared GPU the trainer's buffers opened by the rollout (CUDA IPC)."""
        from rlc_runtime.weight_transfer import plan_buckets

        megabytes = self.cfg.actor_rollout_ref.rollout.checkpoint_engine.update_weights_bucket_megabytes
        buckets = plan_buckets(self.workers.call("weight_layout")[0], megabytes * 2**20)
        address = self.workers.call("master_address")[0]
        join, args = "join_weight_channel", (address, 1 + self.generators.world_size, timeout_s, buckets)
        if self.ipc:
            handles = self.workers.call(join, *args, ipc=True)[0]
            self.generators.call(join, *args, handles=handles)
            return
        wait_groups([(self.workers, self.workers.submit(join, *args)),
                     (self.generators, self.generators.submit(join, *args))], join)

    def _group(self, *args: Any, **kwargs: Any) -> WorkerGroup:
        group = WorkerGroup(*args, **kwargs)
        self.groups.append(group)
        return group

    def fit(self) -> None:
        try:
            self._start_workers()
            start = self._restore()
            self._sync_weights()  # the rollout engines start from the policy's weights
            self.sync_seconds = 0.0
            self._loop(start)
            self._finish()
        finally:
            for group in self.groups:  # a driver that lives on (tests, notebooks) must not keep them
                group.shutdown()

    def _loop(self, start: int) -> None:
        trainer = self.cfg.trainer
        tracking = Tracking(trainer.logger, self.run_dir, trainer.project_name, trainer.experiment_name,
                            config_to_log(self.run_dir), self.total_steps, start)
        try:
            if start == 0 and trainer.val_before_train and self.val_set is not None:
                tracking.log(self._validate(0), 0)
            if trainer.val_only:
                return
            for step in range(start + 1, self.total_steps + 1):
                metrics = self._step(step)
                last = step == self.total_steps
                if self.val_set is not None and trainer.test_freq > 0 and (last or step % trainer.test_freq == 0):
                    timings: dict[str, float] = {}
                    with timed("testing", timings):
                        metrics |= self._validate(step)
                    metrics["timing_s/testing"] = timings["testing"]
                tracking.log(metrics, step)
                score = validation_score(metrics)
                best = self.pushes is not None and self.pushes.improves(score)  # on_best_val: saved to be pushed
                if (trainer.save_freq > 0 and (last or step % trainer.save_freq == 0)) or (
                        last and self.cfg.hf_upload.enabled) or best:
                    self._save(step, last, score)
        finally:
            tracking.close()

    def _finish(self) -> None:
        from rlc_runtime.plot import plot_curves

        metrics_file = self.run_dir / "metrics.jsonl"
        if metrics_file.exists():
            plot_curves(metrics_file, self.run_dir / "curves.png")
        if self.memory_peaks:
            print("rlc_runtime: " + memory_summary(self.run_dir, self.memory_peaks), flush=True)
        if self.cfg.hf_upload.enabled:
            _upload(self.cfg, checkpoint.find_latest(self.ckpt_root), self.run_dir)

    # one step --------------------------------------------------------------------------------------------------
    def _step(self, step: int) -> dict[str, float]:
        cfg, timings, metrics = self.cfg, {}, {}
        self.engine_seconds = 0.0
        with timed("step", timings):
            with self._phase("gen", timings, metrics):
                rows, batch, pending = self._rollout(step, metrics)
                with timed("rollout_sleep", timings):  # part of gen; with update_weights' wake-up: the handoff
                    self._release_rollout(drop_weights=cfg.trainer.critic_warmup <= step)  # synced at the end
            # rlc's own: gen less this is what the trainer, Ray and the sleep add to the engines' generation
            timings["gen_engine"] = self.engine_seconds
            if cfg.trainer.balance_batch:
                batch = batch.select(balanced_order(batch.attention_mask.sum(-1).tolist(), self.world))
            if cfg.algorithm.rollout_correction.bypass_mode:
                batch.old_log_probs = batch.rollout_log_probs  # verl's bypass mode: no recomputed old policy
            else:
                with self._phase("old_log_prob", timings, metrics):
                    self._old_log_probs(batch)
                if (diff := logprob_diff(batch)) is not None:
                    metrics["rollout/logprob_diff"] = diff
                    if not metrics.get("perf/staleness"):  # a stale batch's diff is the policy's lag, not a fault
                        self._check_logprob_diff(diff)
                    metrics |= self._rollout_correction(batch)
            if self.use_ref:
                with self._phase("ref", timings, metrics):
                    batch.ref_log_probs = self._scatter("ref_log_probs", batch)
            if self.use_critic:
                with self._phase("values", timings, metrics):
                    batch.values = self._scatter("values", batch)
            scores, reward_metrics, timings["reward"], components = pending()
            metrics |= reward_metrics
            scores, components = scores[batch_order(batch)], components[:, batch_order(batch)]
            with timed("adv", timings):
                metrics |= self._advantages(batch, scores, components)
            if self.use_critic:
                with self._phase("update_critic", timings, metrics):
                    metrics |= mean_metrics(self.workers.scatter("update_critic", self._parts("update_critic", batch)))
            if cfg.trainer.critic_warmup <= step:
                with self._phase("update_actor", timings, metrics):
                    metrics |= mean_metrics(self.workers.scatter("update_actor", self._parts("update_actor", batch)))
                metrics |= self._mfu(batch, timings["update_actor"])
                if self.pipeline is None:
                    with self._phase("update_weights", timings, metrics):
                        self._sync_weights()
                else:  # the rollout ranks take the new weights before their next launch
                    self.pipeline.updated()
        if self.pipeline is not None:
            timings["update_weights"], self.sync_seconds = self.sync_seconds, 0.0
        metrics |= data_metrics(batch, scores, cfg.data.max_response_length, cfg.data.max_prompt_length,
                                self.use_critic)
        metrics |= variance_proxy_metrics(batch, metrics.get("actor/grad_norm"))
        metrics |= timing_metrics(timings, batch) | throughput_metrics(batch, timings["step"], self.world)
        metrics["training/epoch"] = metrics.pop("training/epoch", self.sampler.epoch)
        if cfg.trainer.rollout_data_dir:
            dump_generations(Path(cfg.trainer.rollout_data_dir), step, rows, batch, scores.tolist())
        if hasattr(self.sampler, "update"):  # a curriculum sampler of the user's sees the step (verl's order)
            self.sampler.update(batch)
        return metrics

    def _mfu(self, batch: TokenBatch, seconds: float) -> dict[str, float]:
        """verl's perf/mfu/actor, on GPUs whose peak is known."""
        if self.peak_flops is None or self.model_config is None:
            return {}
        lengths = batch.attention_mask.sum(-1).tolist()
        passes = self.cfg.actor_rollout_ref.actor.ppo_epochs
        return {"perf/mfu/actor": mfu(self.model_config, lengths, passes, seconds, self.world, self.peak_flops)}

    @contextmanager
    def _phase(self, name: str, timings: dict[str, float], metrics: dict[str, float]) -> Iterator[None]:
        """Time a phase and, on GPUs, record its peak memory (the largest over ranks) as perf/memory/NAME/*."""
        on_gpu = self.cfg.trainer.device == "cuda"
        if on_gpu:
            self.workers.call("memory_peaks")  # a fresh peak for this phase
        with timed(name, timings):
            yield
        if on_gpu:
            peaks = self.workers.call("memory_peaks")
            for kind in peaks[0]:
                metrics[f"perf/memory/{name}/{kind}_gb"] = max(p[kind] for p in peaks)
            device = metrics[f"perf/memory/{name}/device_gb"]
            self.memory_peaks[name] = max(self.memory_peaks.get(name, 0.0), device)

    # rollout: generation, scores, DAPO's group filter, ReMax's greedy baseline ----------------------------------
    def _rollout(self, step: int, metrics: dict[str, float]) -> tuple[list[dict[str, Any]], TokenBatch, Any]:
        """(rows, batch, pending) where pending() gives (scores in generation order, reward metrics, seconds,
        GDPO's [K, B] reward components). Without the group filter the reward worker scores while the log-prob
        passes run."""
        if self.cfg.algorithm.filter_groups.enable:
            rows, batch, scored = self._filtered_rollout(step, metrics)

            def pending() -> Scored:
                return scored  # already scored: the filter needed the scores
        else:
            rows, batch = self._next_generation(step, metrics)
            call, lengths = self.reward.submit(self._reward_samples(rows, batch), step), self._lengths(batch)

            def pending() -> Scored:
                scores, reward_metrics, seconds, components = self.reward.collect(call)
                shaped, shaping_metrics = self._shape(torch.tensor(scores, dtype=torch.float32), lengths)
                return shaped, reward_metrics | shaping_metrics, seconds, _components(components, len(scores))
        if self.cfg.algorithm.adv_estimator == "remax":
            greedy = self._greedy_scores(rows, step)
            batch.meta["reward_baseline"] = [greedy[uid] for uid in batch.meta["uid"]]
        return rows, batch, pending

    def _next_generation(self, step: int, metrics: dict[str, float]) -> tuple[list[dict[str, Any]], TokenBatch]:
        if self.pipeline is None:
            rows = [self.train_set[i] for i in self.sampler.next_batch()]
            return rows, self._generate(rows, self._params(step))
        generation, batch, staleness = self.pipeline.take(step)
        metrics |= {"perf/staleness": staleness, "training/epoch": generation.epoch}
        return generation.rows, batch

    def _launch_generation(self, step: int) -> InFlightBatch:
        """Step `step`'s prompts sent to the rollout ranks; the pipeline collects the samples when it needs them."""
        state, epoch = self.sampler.state_dict(), self.sampler.epoch
        rows = [self.train_set[i] for i in self.sampler.next_batch()]
        return InFlightBatch(step, rows, self._submit_generation(rows, self._params(step)), state, epoch)

    def _params(self, step: int, round_: int = 0) -> Any:
        return sampling_params(self.cfg, seed=self.cfg.actor_rollout_ref.rollout.seed + step + 7919 * round_)

    @staticmethod
    def _lengths(batch: TokenBatch) -> torch.Tensor:
        return batch.response_mask.sum(-1)

    def _shape(self, scores: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """DAPO's overlong penalty on the scores, when the recipe's overlong_buffer or the dapo manager's
        reward_kwargs enable it."""
        from rlc.config.reward import overlong_shaping
        from rlc_runtime.algorithms.dapo import overlong_penalty

        rm = self.cfg.reward_model
        buffer, max_len = overlong_shaping(substituted(rm, "reward_manager"), rm.reward_kwargs, rm.overlong_buffer,
                                           self.cfg.data.max_response_length)
        if not buffer.enable:
            return scores, {}
        penalty = overlong_penalty(lengths, max_len, buffer.len, buffer.penalty_factor)
        return scores + penalty, {"reward/overlong_reward/mean": penalty.mean().item(),
                                  "reward/overlong/mean": (penalty < 0).float().mean().item()}

    def _score_now(self, rows: list[dict[str, Any]], batch: TokenBatch,
                   step: int | None) -> tuple[torch.Tensor, torch.Tensor, dict[str, float], float, torch.Tensor]:
        """(raw scores, shaped scores, metrics, seconds, reward components), in generation order."""
        scores, reward_metrics, seconds, components = self.reward.score(self._reward_samples(rows, batch), step)
        raw = torch.tensor(scores, dtype=torch.float32)
        shaped, shaping_metrics = self._shape(raw, self._lengths(batch))
        return raw, shaped, reward_metrics | shaping_metrics, seconds, _components(components, len(scores))

    def _filtered_rollout(self, step: int, metrics: dict[str, float]) -> tuple[list[dict[str, Any]], TokenBatch,
                                                                                Scored]:
        """DAPO's dynamic sampling: generate rounds of train_batch_size prompts, keep the prompts whose scores
        vary, until train_batch_size prompts are kept (extra ones are dropped) or max_num_gen_batches is reached."""
        from rlc_runtime.algorithms.dapo import varied_groups

        groups, want = self.cfg.algorithm.filter_groups, self.cfg.data.train_batch_size
        rows: list[dict[str, Any]] = []
        parts: list[TokenBatch] = []
        kept_scores: list[torch.Tensor] = []
        kept_components: list[torch.Tensor] = []
        seconds, round_, reward_metrics = 0.0, 0, {}
        while len(rows) < want:
            round_ += 1
            if 0 < groups.max_num_gen_batches < round_:
                raise RunError(f"dynamic sampling kept {len(rows)} of {want} prompts in {round_ - 1} generation "
                               f"rounds (algorithm.filter_groups.max_num_gen_batches): the others scored alike in "
                               f"every sample; the data may be too easy or too hard for the model")
            round_rows = [self.train_set[i] for i in self.sampler.next_batch()]
            batch = self._generate(round_rows, self._params(step, round_ - 1))
            raw, shaped, reward_metrics, spent, components = self._score_now(round_rows, batch, step)
            seconds += spent
            metric = raw if groups.metric == "acc" else shaped
            keep = varied_groups(metric, batch.meta["uid"])[: want - len(rows)]
            new_uid = {uid: len(rows) + k for k, uid in enumerate(keep)}
            index = [i for i, uid in enumerate(batch.meta["uid"]) if uid in new_uid]
            part = batch.select(index)
            part.meta["uid"] = [new_uid[uid] for uid in part.meta["uid"]]
            rows += [round_rows[uid] for uid in keep]
            parts.append(part)
            kept_scores.append(shaped[index])
            kept_components.append(components[:, index])
        widths = max(p.prompt_length for p in parts), max(p.responses.shape[1] for p in parts)
        batch = TokenBatch.concat([pad_to(part, *widths, self.pad_id) for part in parts])
        batch.meta["row"] = list(range(len(batch)))
        metrics["train/num_gen_batches"] = round_
        return rows, batch, (torch.cat(kept_scores), reward_metrics, seconds, torch.cat(kept_components, dim=1))

    def _greedy_scores(self, rows: list[dict[str, Any]], step: int) -> list[float]:
        """ReMax's baseline: the score of one greedy response per prompt (shaped as the samples are)."""
        from dataclasses import replace

        greedy = self._generate(rows, replace(self._params(step), n=1, temperature=0.0, seed=None))
        _, shaped, *_ = self._score_now(rows, greedy, None)
        by_prompt = dict(zip(greedy.meta["uid"], shaped.tolist(), strict=True))
        return [by_prompt[uid] for uid in range(len(rows))]

    def _generate(self, rows: list[dict[str, Any]], params: Any) -> TokenBatch:
        """Generate now, with the trainer's current weights (validation, and the rounds of DAPO and ReMax)."""
        if self.pipeline is not None:
            self.pipeline.catch_up()
        return self._submit_generation(rows, params)()

    def _submit_generation(self, rows: list[dict[str, Any]], params: Any) -> Callable[[], TokenBatch]:
        """Each rollout engine (the ranks of one of the topology's rollout groups) generates for its slice of the
        prompts; the returned function waits for the samples and gives them grouped by prompt, in order."""
        groups = self.topology.rollout_groups
        prompts = [list(row["input_ids"]) for row in rows]
        extras = [{"messages": row["raw_prompt"], "extra_info": row["extra_info"]} for row in rows]
        requests, slices = engine_requests(prompts, params, groups, extras)
        refs = self.generators.submit_parts("generate", requests)

        def collect() -> TokenBatch:
            per_rank = self.generators.wait(refs, "generate")
            self.engine_seconds += max(seconds for _, seconds in per_rank)
            parts = [per_rank[ranks[0]][0] for ranks in groups]  # an engine's ranks sample alike
            generations = []
            for part, s in zip(parts, slices, strict=True):
                for g in part:
                    g.prompt_index = s.start + g.prompt_index
                    generations.append(g)
            batch = build_batch(prompts, generations, self.pad_id,
                                self.cfg.actor_rollout_ref.rollout.response_length)
            batch.meta["row"] = list(range(len(batch)))  # where each sample started, to realign rewards later
            return batch
        return collect

    def _release_rollout(self, drop_weights: bool = False) -> None:
        """Once a phase's generations are all done (DAPO and ReMax generate more than once per step).
        `drop_weights`: this step ends with a weight sync, so the engine need not keep its weights meanwhile."""
        if self.generators is self.workers:
            self.workers.call("release_rollout", drop_weights)  # colocated: vLLM sleeps, training gets the memory

    def _sync_weights(self) -> None:
        if self.generators is self.workers:
            self.workers.call("sync_weights")
            return
        start = time.perf_counter()  # one transfer: training ranks send (rank 0 broadcasts), rollout ranks receive
        if self.ipc:  # the rollout reads the shared buffers once the trainer has filled them
            self.workers.call("send_weights")
            self.generators.call("receive_weights")
        else:
            wait_groups([(self.workers, self.workers.submit("send_weights")),
                         (self.generators, self.generators.submit("receive_weights"))], "update_weights")
        self.sync_seconds += time.perf_counter() - start

    def _parts(self, method: str, batch: TokenBatch) -> list[TokenBatch]:
        """One part of `batch` per rank: a data-parallel chunk each, which the sp ranks of a Ulysses group share."""
        sp = self._sequence_parallel(method)
        return [part for part in batch.chunk(self.world // sp) for _ in range(sp)]

    def _sequence_parallel(self, method: str) -> int:
        arf = self.cfg.actor_rollout_ref
        if method in ("values", "update_critic"):
            return self.cfg.critic.ulysses_sequence_parallel_size
        if method == "ref_log_probs" and not arf.model.lora_rank:  # with LoRA the reference is the actor's model
            return arf.ref.ulysses_sequence_parallel_size or 1
        return arf.actor.ulysses_sequence_parallel_size

    def _per_rank(self, method: str, batch: TokenBatch) -> list[Any]:
        """`method`'s results on each data-parallel chunk (the first rank of each Ulysses group answers for it)."""
        return self.workers.scatter(method, self._parts(method, batch))[::self._sequence_parallel(method)]

    def _scatter(self, method: str, batch: TokenBatch) -> torch.Tensor:
        return torch.cat(self._per_rank(method, batch))

    def _old_log_probs(self, batch: TokenBatch) -> None:
        parts = self._per_rank("log_probs", batch)
        batch.old_log_probs = torch.cat([part["log_probs"] for part in parts])
        if "sum_pi_squared" in parts[0]:
            batch.sum_pi_squared = torch.cat([part["sum_pi_squared"] for part in parts])

    def _reward_samples(self, rows: list[dict[str, Any]], batch: TokenBatch) -> list[dict[str, Any]]:
        # The whole response, tool and user turns of a multi-turn one included (verl's reward sees them too).
        valid = batch.attention_mask[:, batch.prompt_length:].bool()
        texts = self.tokenizer.batch_decode([r[m].tolist() for r, m in zip(batch.responses, valid, strict=True)],
                                            skip_special_tokens=True)
        batch.meta["response_text"] = texts
        return [reward_sample(rows[uid], text) for uid, text in zip(batch.meta["uid"], texts, strict=True)]

    def _check_logprob_diff(self, diff: float) -> None:
        limit = self.cfg.actor_rollout_ref.rollout.logprob_diff_tolerance
        if diff > limit:
            raise RunError(f"rollout/logprob_diff {diff:.3f} exceeds rollout.logprob_diff_tolerance {limit}: the "
                           f"rollout engine does not run the trainer's weights (a failed weight sync?)")

    def _rollout_correction(self, batch: TokenBatch) -> dict[str, float]:
        """verl's decoupled rollout correction: IS weights and rejection between rollout and trainer log-probs."""
        from rlc_runtime.algorithms.rollout_correction import apply_rollout_correction

        correction = self.cfg.algorithm.rollout_correction
        if not (correction.rollout_is or correction.rollout_rs):
            return {}
        batch.rollout_is_weights, batch.response_mask, metrics = apply_rollout_correction(
            correction, batch.old_log_probs, batch.rollout_log_probs, batch.response_mask)
        return metrics

    def _advantages(self, batch: TokenBatch, scores: torch.Tensor, components: torch.Tensor) -> dict[str, float]:
        from rlc_runtime.algorithms.advantages import AdvantageInputs, compute_advantage
        from rlc_runtime.algorithms.losses import kl_penalty

        algo, mask, metrics = self.cfg.algorithm, batch.response_mask, {}
        # The score sits on the model's last token (a multi-turn mask has holes where tools and users spoke).
        last = torch.where(mask.bool(), torch.arange(mask.shape[1]), -1).max(-1).values.clamp(min=0)
        token_scores = torch.zeros_like(mask, dtype=torch.float32)
        token_scores[torch.arange(len(batch)), last] = scores
        batch.token_level_rewards = token_scores
        if algo.use_kl_in_reward:
            kl = kl_penalty(batch.old_log_probs, batch.ref_log_probs, algo.kl_penalty) * mask
            batch.token_level_rewards = token_scores - self.kl_ctrl.value * kl
            current = ((kl.sum(-1) / mask.sum(-1).clamp(min=1)).mean()).item()
            metrics |= {"actor/reward_kl_penalty": current, "actor/reward_kl_penalty_coeff": self.kl_ctrl.value}
            self.kl_ctrl.update(current, len(batch))
        baseline = batch.meta.get("reward_baseline")
        batch.advantages, batch.returns = compute_advantage(algo, AdvantageInputs(
            batch.token_level_rewards, mask, torch.tensor(batch.meta["uid"]), values=batch.values,
            reward_baselines=torch.tensor(baseline, dtype=torch.float32) if baseline is not None else None,
            old_log_probs=batch.old_log_probs, sum_pi_squared=batch.sum_pi_squared,
            rollout_is_weights=batch.rollout_is_weights, reward_components=components if len(components) else None))
        for key, values in zip(algo.gdpo_reward_keys or [], components, strict=False):
            metrics |= {f"gdpo/{key}/mean": values.mean().item(), f"gdpo/{key}/std": values.std(correction=0).item(),
                        f"gdpo/{key}/max": values.max().item(), f"gdpo/{key}/min": values.min().item()}
        return metrics

    # validation ------------------------------------------------------------------------------------------------
    def _validate(self, step: int) -> dict[str, float]:
        rows = [self.val_set[i] for i in range(len(self.val_set))]
        params = sampling_params(self.cfg, validate=True, seed=self.cfg.actor_rollout_ref.rollout.seed)
        batch = self._generate(rows, params)
        self._release_rollout()
        scores, *_ = self.reward.score(self._reward_samples(rows, batch), None)
        sources = [str(rows[uid].get("data_source", "unknown")) for uid in batch.meta["uid"]]
        trainer = self.cfg.trainer
        if trainer.validation_data_dir:
            dump_generations(Path(trainer.validation_data_dir), step, rows, batch, scores)
        for uid, text, score in list(zip(batch.meta["uid"], batch.meta["response_text"], scores,
                                         strict=True))[:trainer.log_val_generations]:
            print(f"[val step {step}] {rows[uid]['prompt_text']!r} -> {text!r} (score {score:g})", flush=True)
        return validation_metrics(sources, scores, params.n)

    # checkpoints -----------------------------------------------------------------------------------------------
    def _save(self, step: int, last: bool, score: float | None = None) -> None:
        # The final push is _finish's; one during training is due by hf_upload's schedule.
        push = self.pushes.due(score) if self.pushes is not None and not last else None
        with checkpoint.atomic_checkpoint(self.ckpt_root, step) as tmp:
            self.workers.call("save", str(tmp), self.pushes is not None and (last or push is not None))
            sampler = (self.pipeline and self.pipeline.resume_state()) or self.sampler.state_dict()
            checkpoint.save_trainer_state(tmp, step, sampler, {"kl_coef": self.kl_ctrl.value})
        keep = [k for k in (self.cfg.trainer.max_actor_ckpt_to_keep, self.cfg.trainer.max_critic_ckpt_to_keep) if k]
        checkpoint.prune(self.ckpt_root, min(keep) if keep else None)
        if push is not None and self.pushes is not None:
            self.pushes.pushed(_upload(self.cfg, checkpoint.find_latest(self.ckpt_root), self.run_dir,
                                       f"step {step}: {push}"))

    def _restore(self) -> int:
        trainer = self.cfg.trainer
        checkpoint.sweep_incomplete(self.ckpt_root)
        target = checkpoint.resume_target(self.ckpt_root, trainer.resume_mode, trainer.resume_from_path)
        if target is None:
            return 0
        state = checkpoint.load_trainer_state(target)
        self.workers.call("load", str(target))
        self.sampler.load_state_dict(state["sampler"])
        self.kl_ctrl.value = state["extra"].get("kl_coef", self.kl_ctrl.value)
        print(f"rlc_runtime: resumed from {target} (step {state['step']} of {self.total_steps})", flush=True)
        return state["step"]


def memory_summary(run_dir: Path, measured: dict[str, float]) -> str:
    """One line: the measured peak of the device (per phase) beside the plan's estimate."""
    phase, peak = max(measured.items(), key=lambda item: item[1])
    line = f"memory: measured peak {peak:.1f} GiB ({phase})"
    try:
        estimate = json.loads((run_dir / "plan.json").read_text())["memory"]["peak"]
    except (OSError, ValueError, KeyError, TypeError):
        return line + "; no estimate in plan.json"
    return line + f", estimated {estimate['bytes'] / 2**30:.1f} GiB ({estimate['phase']})"


def reward_sample(row: dict[str, Any], response: str) -> dict[str, Any]:
    """What the reward side needs of a dataset row, plus the decoded response."""
    keys = ("data_source", "ground_truth", "extra_info", "verification_info", "prompt_text", "raw_prompt")
    return {"response": response, **{k: row.get(k) for k in keys}}


def dump_generations(directory: Path, step: int, rows: list[dict[str, Any]], batch: TokenBatch,
                     scores: list[float]) -> None:
    """verl's `rollout_data_dir` / `validation_data_dir`: one JSONL file per step of prompt, response and score."""
    directory.mkdir(parents=True, exist_ok=True)
    records = [{"step": step, "input": rows[uid]["prompt_text"], "output": text, "score": score}
               for uid, text, score in zip(batch.meta["uid"], batch.meta["response_text"], scores, strict=True)]
    if "trajectory" in batch.meta:  # multi-turn: the conversation, and every response token with its loss mask
        valid = batch.attention_mask[:, batch.prompt_length:].bool()
        for i, record in enumerate(records):
            record |= {"trajectory": batch.meta["trajectory"][i], "response_ids": batch.responses[i][valid[i]].tolist(),
                       "response_mask": batch.response_mask[i][valid[i]].int().tolist()}
    lines = [json.dumps(record) for record in records]
    checkpoint.write_text_atomic(directory / f"{step}.jsonl", "".join(line + "\n" for line in lines))


def _components(components: list[list[float]], samples: int) -> torch.Tensor:
    """GDPO's reward components as a [K, B] tensor (K = 0 unless adv_estimator is gdpo)."""
    return torch.tensor(components, dtype=torch.float32).reshape(len(components), samples)


def with_tool_schemas(data: Any, multi_turn: Any) -> Any:
    """The data options with the declared tools' schemas given to the chat template, so the prompt shows them."""
    if not (multi_turn.enable and multi_turn.tool_config_path):
        return data
    from rlc.tool_config import read_tools

    schemas = [spec.schema for spec in read_tools(multi_turn.tool_config_path)]
    return data.model_copy(update={"apply_chat_template_kwargs": {**data.apply_chat_template_kwargs,
                                                                   "tools": schemas}})


def batch_order(batch: TokenBatch) -> torch.Tensor:
    """Where each sample of a (possibly reordered) batch sat when it was generated."""
    return torch.tensor(batch.meta["row"])


def balanced_order(lengths: list[int], parts: int) -> list[int]:
    """An order of the samples whose `parts` equal contiguous chunks carry near-equal token counts (verl's
    `balance_batch`): longest first, each to the lightest chunk that still has room."""
    size = len(lengths) // parts
    chunks: list[list[int]] = [[] for _ in range(parts)]
    totals = [0] * parts
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        part = min((p for p in range(parts) if len(chunks[p]) < size), key=lambda p: totals[p])
        chunks[part].append(index)
        totals[part] += lengths[index]
    return [i for chunk in chunks for i in chunk]


def _upload_schedule(cfg: RLCConfig) -> Any:
    from rlc_runtime.upload import UploadSchedule

    upload = cfg.hf_upload
    return UploadSchedule(upload.every_n_saves, upload.on_best_val) if upload.enabled else None


def validation_score(metrics: dict[str, float]) -> float | None:
    """The run's validation score of this step (verl's val-core/all/reward/mean@N), if it validated."""
    return next((v for k, v in metrics.items() if k.startswith("val-core/all/reward/mean@")), None)


def _upload(cfg: RLCConfig, ckpt_dir: Path | None, run_dir: Path, what: str = "final checkpoint") -> bool:
    """One Hub push (a commit); it never fails the run. Whether it succeeded."""
    from rlc_runtime.upload import upload_checkpoint

    if ckpt_dir is None:
        print("rlc_runtime: warning: hf_upload: no checkpoint to upload", flush=True)
        return False
    try:
        return upload_checkpoint(cfg, ckpt_dir, run_dir, what) is not None
    except Exception as error:  # noqa: BLE001 - an upload failure must never fail a training run
        print(f"rlc_runtime: warning: hf_upload failed, the checkpoint stays at {ckpt_dir}: "
              f"{type(error).__name__}: {error}", flush=True)
        return False
