"""Model FLOPs utilisation, verl's `perf/mfu/actor`: the FLOPs an update needs by the model's arithmetic, over
what the GPUs could do in the time it took. The count is verl's (FlopsCounter): 6 per dense parameter and token,
embeddings and head counted once each, plus attention's 12 x seqlen^2 x heads x head_dim per layer; gradient
checkpointing's extra forward is not useful work, so it is not counted."""

from __future__ import annotations

from typing import Any

# dense bf16 peak in TFLOP/s, by a name torch.cuda.get_device_name() contains (first match wins)
PEAK_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("H800", 989.0), ("H20", 148.0), ("A100", 312.0), ("A800", 312.0),
               ("L40S", 362.0), ("B200", 2250.0), ("GB200", 2500.0))


def peak_flops(device_name: str) -> float | None:
    """FLOP/s of one GPU at dense bf16, or None for a device this table does not know (no MFU then)."""
    return next((tflops * 1e12 for name, tflops in PEAK_TFLOPS if name in device_name), None)


def update_flops(model: dict[str, Any], sequence_lengths: list[int]) -> float:
    """FLOPs of one forward and backward pass over sequences of these lengths (prompt + response tokens)."""
    hidden, layers = model["hidden_size"], model["num_hidden_layers"]
    heads = model["num_attention_heads"]
    head_dim = model.get("head_dim") or hidden // heads
    kv_heads = model.get("num_key_value_heads") or heads
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)  # q and o, k and v
    experts = model.get("num_experts_per_tok") or 1
    intermediate = model.get("moe_intermediate_size") if experts > 1 else model["intermediate_size"]
    mlp = 3 * hidden * intermediate * experts
    dense = (attention + mlp) * layers + 2 * model["vocab_size"] * hidden
    squares = sum(length * length for length in sequence_lengths)
    return 6 * dense * sum(sequence_lengths) + 12 * squares * heads * head_dim * layers


def mfu(model: dict[str, Any], sequence_lengths: list[int], passes: int, seconds: float, gpus: int,
        peak: float) -> float:
    """The fraction of `gpus` GPUs' peak that `passes` passes over the sequences used in `seconds`."""
    return update_flops(model, sequence_lengths) * passes / (seconds * gpus * peak)
