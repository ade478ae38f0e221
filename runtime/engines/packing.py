"""Forward passes on a `TokenBatch` micro-batch: padded, or padding-free (packed) when `use_remove_padding`.

Packed: the real tokens of every row go into one row of length nnz, with `position_ids` restarting at 0 for each
sequence and no attention mask. transformers then builds a block-diagonal causal mask from the position ids
(`masking_utils.find_packed_sequence_indices`, used by every model that builds its mask through `masking_utils`,
for eager, sdpa and flash attention alike), so no token attends across sequences and no compute is spent on
padding. On CPU the packed log-probs equal the padded ones within 1e-5 for Qwen2, Llama, Mistral, Gemma and Phi
(tests/runtime/engines/test_fsdp.py); a model whose own code ignores packed position ids would mix sequences,
which is why the switch stays a per-model setting (`use_remove_padding: false` forces the padded path).

Packing pays only with a variable-length attention kernel (flash attention). Under sdpa or eager attention the
packed row carries an nnz x nnz block-diagonal mask, which rules out the fused kernels and costs more than the
padding it saves: on an H200 at the GRPO benchmark shape a step took 4.02 s packed against 2.53 s padded
(`bench/grpo_gpu.py`). So `use_remove_padding` packs where the model's attention is varlen, and pads elsewhere.

Both paths compute the LM head only where a response token is predicted (`logits_to_keep`), which is where the
memory goes for large vocabularies. The result is laid out as the batch's responses, [b, R]: column c holds the
prediction of response token c from the position before it (for the critic, the value at that position, as verl).
"""

from __future__ import annotations

import inspect

import torch

from rlc_runtime.batch import TokenBatch

VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")


def packing_pays(model: torch.nn.Module) -> bool:
    return getattr(model.config, "_attn_implementation", None) in VARLEN_ATTENTION


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def response_logits(model: torch.nn.Module, batch: TokenBatch, device: str, packed: bool,
                    temperature: float = 1.0) -> torch.Tensor:
    """[b, R, V] float32 logits (or [b, R, 1] values for a value model) predicting each response token."""
    if packed:
        return _packed(model, batch, device) / temperature
    return _padded(model, batch, device) / temperature


def _padded(model: torch.nn.Module, batch: TokenBatch, device: str) -> torch.Tensor:
    length = batch.responses.shape[1]
    kwargs = {"logits_to_keep": length + 1} if accepts_logits_to_keep(model) else {}
    out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                position_ids=batch.position_ids.to(device), use_cache=False, **kwargs)
    return out.logits[:, -length - 1:-1].float()


def _packed(model: torch.nn.Module, batch: TokenBatch, device: str) -> torch.Tensor:
    mask = batch.attention_mask.bool()
    rows, cols = mask.nonzero(as_tuple=True)  # row-major: each sequence's tokens stay contiguous and in order
    start = batch.prompt_length - 1
    length = batch.responses.shape[1]
    # Packed positions whose logits predict a response column (the last token of the response predicts nothing).
    keep = (cols >= start) & (cols < start + length)
    kwargs = {"logits_to_keep": keep.nonzero().squeeze(-1).to(device)} if accepts_logits_to_keep(model) else {}
    out = model(input_ids=batch.input_ids[mask][None].to(device),
                position_ids=batch.position_ids[mask][None].to(device), use_cache=False, **kwargs)
    logits = out.logits[0].float()
    if not kwargs:
        logits = logits[keep.to(device)]
    full = logits.new_zeros((len(batch), length, logits.shape[-1]))
    full[rows[keep].to(device), (cols[keep] - start).to(device)] = logits
    return full
