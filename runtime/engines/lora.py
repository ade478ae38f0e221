"""LoRA on the FSDP2 engine (verl's `actor_rollout_ref.model.lora_rank`): peft adapters on a frozen base.

What the engine takes from here, and why each piece is as it is:
- `add_adapters`: peft's `get_peft_model` with verl's LoraConfig (rank, alpha, target modules, `all-linear`,
  excluded modules, no bias), or a trained adapter from `lora_adapter_path`; peft freezes every base weight, so
  the engine's optimizer, built over the parameters that require gradients, holds Adam's moments for the
  adapters alone.
- `merged_weights`: the rollout gets the base weights with each adapter folded in (W + alpha/r * B @ A), under the
  base model's Hugging Face names, one module at a time from the engine's (gathered) state dict. Every rollout
  (HF, vLLM, rollout ranks of their own) loads them as it loads a full fine-tune's weights; see the README for
  why this rather than vLLM's LoRA requests.
- `AdapterlessReference`: verl's `ref_in_actor`: the reference policy is the actor's own model run with its
  adapters switched off (the frozen base), so no second copy of the model is loaded.
- `save_adapter`: the adapter in PEFT's format (adapter_config.json + adapter_model.safetensors), which
  `PeftModel.from_pretrained(base, folder)` loads; a collective when sharded, rank 0 writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from rlc_runtime.batch import TokenBatch
from rlc_runtime.engines.base import MicroFn

ADAPTER_DIR = "lora_adapter"  # verl's folder name inside a checkpoint's actor/
PEFT_PREFIX = "base_model.model."
BASE_LAYER = ".base_layer."


def lora_enabled(model_cfg: Any) -> bool:
    return int(getattr(model_cfg, "lora_rank", 0) or 0) > 0


def add_adapters(model: torch.nn.Module, model_cfg: Any, gradient_checkpointing: bool) -> torch.nn.Module:
    """`model` wrapped by peft with trainable adapters (new, or loaded from `lora_adapter_path`), base frozen."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if gradient_checkpointing:  # checkpointed blocks need an input that requires grad when the embeddings do not
        model.enable_input_require_grads()
    if model_cfg.lora_adapter_path:
        return PeftModel.from_pretrained(model, model_cfg.lora_adapter_path, is_trainable=True)
    config = LoraConfig(task_type="CAUSAL_LM", r=model_cfg.lora_rank, lora_alpha=model_cfg.lora_alpha,
                        target_modules=_plain(model_cfg.target_modules),
                        exclude_modules=_plain(model_cfg.exclude_modules), bias="none",
                        base_model_name_or_path=model_cfg.path, revision=model_cfg.revision)
    # The same random lora_A on every rank, whatever each rank's seed: FSDP keeps each rank's own slice of what
    # that rank built, so adapters drawn differently per rank would be shards of no single matrix.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return get_peft_model(model, config)


def _plain(value: Any) -> Any:
    """peft wants a str (a regex, or "all-linear") or a list of names; configs may hold tuples or ListConfigs."""
    return value if value is None or isinstance(value, str) else list(value)


def scalings(model: torch.nn.Module) -> dict[str, float]:
    """alpha / r of each adapted module, under the module's name in the peft model's state dict."""
    from peft.tuners.lora import LoraLayer

    return {name: module.scaling["default"] for name, module in model.named_modules()
            if isinstance(module, LoraLayer) and "default" in module.scaling}


def merged_weights(state: Iterator[tuple[str, torch.Tensor]],
                   scaling: dict[str, float]) -> Iterator[tuple[str, torch.Tensor]]:
    """The peft model's full state dict (peft names, in state-dict order) -> the base model's weights under its
    Hugging Face names, adapters merged: W + scaling * B @ A. peft registers a layer's base (weight, bias) before
    its lora_A and lora_B, so a module is complete when its B arrives; one module's tensors are held at a time."""
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state:
        if is_adapter(name):
            owner, rest = name.split(".lora_", 1)
            pending.setdefault(owner, {})[rest[0]] = tensor
            if rest[0] == "B":
                yield from _merge(owner, pending.pop(owner), scaling[owner])
        elif BASE_LAYER in name:
            owner, leaf = name.split(BASE_LAYER, 1)
            pending.setdefault(owner, {})[leaf] = tensor
        else:
            yield _hf_name(name), tensor
    if pending:
        raise ValueError(f"adapted modules without both lora_A and lora_B: {sorted(pending)[:3]}")


def _merge(owner: str, parts: dict[str, torch.Tensor], scale: float) -> Iterator[tuple[str, torch.Tensor]]:
    weight = parts["weight"]
    if "A" in parts and "B" in parts:
        delta = (parts["B"].float() @ parts["A"].float()) * scale
        weight = (weight.float() + delta).to(weight.dtype)
    yield _hf_name(owner + ".weight"), weight
    if "bias" in parts:
        yield _hf_name(owner + ".bias"), parts["bias"]


def _hf_name(name: str) -> str:
    return name.removeprefix(PEFT_PREFIX)


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def adapter_tensors(state: Iterator[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The adapters' tensors of a peft state dict, under the names PEFT saves them (without the adapter's)."""
    return {name.replace(".default.", "."): tensor.detach().cpu().contiguous()
            for name, tensor in state if is_adapter(name)}


def save_adapter(model: torch.nn.Module, tensors: dict[str, torch.Tensor], directory: Path) -> None:
    """adapter_config.json and adapter_model.safetensors, PEFT's own format, into a checkpoint's directory (which
    the trainer makes atomic)."""
    from safetensors.torch import save_file

    Path(directory).mkdir(parents=True, exist_ok=True)
    model.peft_config["default"].save_pretrained(str(directory))
    save_file(tensors, str(Path(directory) / "adapter_model.safetensors"), metadata={"format": "pt"})


class AdapterlessReference:
    """The reference role served by the LoRA actor's engine with its adapters disabled: the base model's
    log-probs, with no second model in memory. Only forward passes; it never trains or saves."""

    role = "ref"

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.device = actor.device
        self.data_parallel_size = actor.data_parallel_size
        self.equal_micro_batches = actor.equal_micro_batches
        self.sequence_parallel_size = actor.sequence_parallel_size

    def data_batch(self, batch: TokenBatch) -> tuple[TokenBatch, slice]:
        return self.actor.data_batch(batch)

    def forward_backward(self, parts: list[TokenBatch], fn: MicroFn, backward: bool) -> list[dict[str, Any]]:
        if backward:
            raise ValueError("the reference policy is never trained")
        with self.actor.model.disable_adapter():
            return self.actor.forward_backward(parts, fn, backward=False)

    def resident(self, training: bool) -> contextlib.AbstractContextManager[None]:
        return self.actor.resident(False)

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        return self.actor.all_reduce_sum(values)

    def all_reduce_max(self, values: torch.Tensor) -> torch.Tensor:
        return self.actor.all_reduce_max(values)
