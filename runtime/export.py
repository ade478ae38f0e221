"""Sharded training checkpoints -> one Hugging Face folder (config, tokenizer, safetensors, optional optimizer.pt).

verl writes one file per rank (`model_world_size_N_rank_K.pt`, `optim_world_size_N_rank_K.pt`) holding DTensor
shards, plus a `huggingface/` folder with the config and tokenizer. Consolidation reads every rank's file
memory-mapped and joins one tensor at a time, so the full model is held in memory once, not twice. Every rank must
be present and every shard's shape must agree with its global shape; otherwise nothing is written and the error
says which rank or tensor is wrong.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

SHARD = re.compile(r"^(model|optim|extra_state)_world_size_(\d+)_rank_(\d+)\.pt$")
HF_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja",
            "added_tokens.json")


class CheckpointError(ValueError):
    """A checkpoint that cannot be consolidated; the message says which file or tensor."""


def shard_files(directory: Path, kind: str) -> list[Path]:
    """The `kind` ("model" or "optim") files of one checkpoint, ordered by rank, all ranks present."""
    found: dict[int, Path] = {}
    sizes = set()
    for path in directory.iterdir():
        match = SHARD.match(path.name)
        if match and match.group(1) == kind:
            sizes.add(int(match.group(2)))
            found[int(match.group(3))] = path
    if not found:
        raise CheckpointError(f"no {kind}_world_size_N_rank_K.pt files in {directory}")
    if len(sizes) > 1:
        raise CheckpointError(f"{directory} mixes {kind} shards of world sizes {sorted(sizes)}")
    (world,) = sizes
    missing = sorted(set(range(world)) - set(found))
    if missing:
        raise CheckpointError(f"{directory}: {kind} shards of rank(s) {missing} are missing (world size {world})")
    return [found[rank] for rank in range(world)]


def load_shard(path: Path) -> dict[str, Any]:
    import torch.distributed.tensor  # noqa: F401  (registers DTensor for weights-only loading)

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # corrupt or truncated files: say which one
        raise CheckpointError(f"cannot read {path.name}: {err}") from None


def consolidated_tensors(shards: list[dict[str, Any]], what: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Join each tensor across ranks by its DTensor placement (Shard(d) -> concat on d; Replicate -> rank 0)."""
    names = list(shards[0])
    for rank, shard in enumerate(shards[1:], start=1):
        if set(shard) != set(names):
            raise CheckpointError(f"rank {rank}{what} holds different tensors than rank 0: "
                                  f"{sorted(set(shard) ^ set(names))[:5]}")
    for name in names:
        yield name, _join(name, [shard[name] for shard in shards], what)


def _join(name: str, parts: list[Any], what: str) -> torch.Tensor:
    first = parts[0]
    if not hasattr(first, "placements"):
        return first.clone() if isinstance(first, torch.Tensor) else first
    placement = first.placements[0]
    locals_ = [p.to_local() for p in parts]
    if placement.is_replicate():
        full = locals_[0].clone()
    elif placement.is_shard():
        full = torch.cat(locals_, dim=placement.dim)
    else:
        raise CheckpointError(f"{name}{what}: unsupported placement {placement}")
    if tuple(full.shape) != tuple(first.shape):
        raise CheckpointError(f"{name}{what}: shards join to {tuple(full.shape)}, but the global shape is "
                              f"{tuple(first.shape)} (shards of different runs mixed?)")
    return full


def consolidate_verl(checkpoint: Path, out: Path, base_model: str | None = None, with_optimizer: bool = False,
                     revision: str | None = None) -> Path:
    """verl's sharded actor checkpoint -> an HF folder at `out` (written beside, then renamed into place)."""
    from safetensors.torch import save_file

    checkpoint = Path(checkpoint)
    model_shards = [load_shard(p) for p in shard_files(checkpoint, "model")]
    optim_files = shard_files(checkpoint, "optim") if with_optimizer else []
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    weights = dict(consolidated_tensors(model_shards, " (model)"))
    _copy_hf_files(checkpoint, staging, base_model, revision)
    save_file({k: v.contiguous() for k, v in weights.items()}, staging / "model.safetensors",
              metadata={"format": "pt"})
    names = _trainable(list(weights), staging)
    del weights, model_shards
    if optim_files:
        torch.save(consolidate_optimizer([load_shard(p) for p in optim_files], names), staging / "optimizer.pt")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def parameter_names(actor: Path, hf_folder: Path) -> list[str]:
    """The model's parameter names in the order the optimizer numbered them (the model state dict's order)."""
    first = load_shard(shard_files(actor, "model")[0])
    return _trainable(list(first), hf_folder)


def _trainable(names: list[str], hf_folder: Path) -> list[str]:
    """Tied output embeddings are one parameter (and one optimizer entry) under two state-dict names. A LoRA
    policy's optimizer holds its adapters alone."""
    import json

    from rlc_runtime.engines.lora import is_adapter

    if any(is_adapter(n) for n in names):
        return [n for n in names if is_adapter(n)]
    config = json.loads((hf_folder / "config.json").read_text()) if (hf_folder / "config.json").exists() else {}
    tied = config.get("tie_word_embeddings", False)
    return [n for n in names if not (tied and n == "lm_head.weight")]


def consolidate_optimizer(shards: list[dict[str, Any]], param_names: list[str]) -> dict[str, Any]:
    """Per-rank torch optimizer state dicts (state keyed by parameter index) -> one, keyed by parameter name."""
    states = [shard["state"] for shard in shards]
    if len(states[0]) != len(param_names):
        raise CheckpointError(f"optimizer holds state for {len(states[0])} parameters, the model has "
                              f"{len(param_names)}")
    state = {}
    for index, name in enumerate(param_names):
        per_rank = [s.get(index, s.get(str(index))) for s in states]
        if any(p is None for p in per_rank):
            raise CheckpointError(f"optimizer state of {name} is missing on some rank")
        state[name] = {key: _join(f"{name}.{key}", [p[key] for p in per_rank], " (optimizer)")
                       for key in per_rank[0]}
    return {"state": state, "param_groups": shards[0]["param_groups"], "format": "rlc-consolidated-v1"}


def _copy_hf_files(checkpoint: Path, out: Path, base_model: str | None, revision: str | None) -> None:
    """config and tokenizer from the checkpoint's huggingface/ folder, or else from the base model."""
    source = checkpoint / "huggingface"
    if source.is_dir():
        for name in HF_FILES:
            if (source / name).exists():
                shutil.copy2(source / name, out / name)
        return
    if base_model is None:
        raise CheckpointError(f"{checkpoint} has no huggingface/ folder with the config and tokenizer; "
                              "pass --base-model PATH_OR_REPO")
    from transformers import AutoConfig, AutoTokenizer

    AutoConfig.from_pretrained(base_model, revision=revision).save_pretrained(out)
    AutoTokenizer.from_pretrained(base_model, revision=revision).save_pretrained(out)


def main(argv: list[str] | None = None) -> int:
    """`python -m rlc_runtime.export CHECKPOINT OUT [--base-model M] [--with-optimizer]`: how `rlc upload`, which
    never imports the runtime, consolidates shards. A bad checkpoint is one line on stderr and exit status 1."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="rlc_runtime.export", description=main.__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--base-model")
    parser.add_argument("--with-optimizer", action="store_true")
    args = parser.parse_args(argv)
    try:
        consolidate_verl(args.checkpoint, args.out, args.base_model, with_optimizer=args.with_optimizer)
    except CheckpointError as err:
        print(f"rlc_runtime.export: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
