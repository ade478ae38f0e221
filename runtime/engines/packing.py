"""Forward passes on a `TokenBatch` micro-batch: padded, or padding-free (packed) when `use_remove_padding`.

Packed: the real tokens of every row go into one row of length nnz, with `position_ids` restarting at 0 for each
sequence and no attention mask. transformers then builds a block-diagonal causal mask from the position ids
(`masking_utils.find_packed_sequence_indices`, used by every model that builds its mask through `masking_utils`,
for eager, sdpa and flash attention alike), so no token attends across sequences and no compute is spent on
padding. On CPU the packed log-probs equal the padded ones within 1e-5 for Qwen2, Llama, Mistral, Gemma and Phi
(tests/runtime/engines/test_fsdp.py); a model whose own code ignores packed position ids would mix sequences,
which is why the switch stays a per-model setting (`use_remove_padding: false` forces the padded path).

Packing pays only with a variable-length attention kernel: flash attention, or torch's flex_attention with the
document mask transformers builds from the packed position ids (a `BlockMask`: blocks wholly across two sequences
are skipped, not masked). Under sdpa or eager attention the packed row carries an nnz x nnz block-diagonal mask,
which rules out the fused kernels and costs more than the padding it saves: on an H200 at the GRPO benchmark shape
a step took 4.02 s packed against 2.53 s padded (`bench/grpo_gpu.py`). So with `use_remove_padding` the FSDP engine
switches the model to `packed_attention(device)`: flash_attention_2 on CUDA where flash-attn is installed, else
flex_attention on CUDA, and transformers' default (sdpa, padded) elsewhere. `override_config.attn_implementation`
overrides that choice and `packing_pays` then reads the kernel the model runs (`flex_attention` on CPU packs too,
which is how the tests check the packed flex path against the padded one).

transformers compiles flex_attention (and the block mask's construction) with `torch.compile`; a new packed length
is a new shape. Padding the packed row up to a multiple of `PACK_MULTIPLE` tokens with a dummy sequence (its own
document: positions restart at 0, and nothing reads its logits) keeps the lengths to a few buckets aligned to flex's
128-token blocks, so dynamo's automatic dynamic shapes settle after the first recompile instead of specialising
on every nnz. Seen on CPU (torch 2.13, transformers 5.19, whose flex code equals 5.17's): compiled, the packed
log-probs equal the padded ones within 1e-6; the second length recompiles `flex_attention` and `create_block_mask`
once as dynamic, later lengths and train/eval switches do not. flex has no backward on CPU, so the tests run it
forward only; `bench/packing_gpu.py` measures both paths on the GPU host.

Both paths compute the LM head only where a response token is predicted (`logits_to_keep`), which is where the
memory goes for large vocabularies. The result is laid out as the batch's responses, [b, R]: column c holds the
prediction of response token c from the position before it (for the critic, the value at that position, as verl).
"""

from __future__ import annotations

import inspect
import warnings

import torch

from rlc_runtime.batch import TokenBatch

VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention")
PACK_MULTIPLE = 128  # flex_attention's block size: packed rows are padded up to a multiple of it


def packed_attention(device: str) -> str | None:
    """The attention to load a model with for packed micro-batches on `device`; None: transformers' default,
    which has no varlen kernel, so the engine pads."""
    if not str(device).startswith("cuda"):
        return None
    from transformers.utils import is_flash_attn_2_available

    return "flash_attention_2" if is_flash_attn_2_available() else "flex_attention"


def use_packed_attention(model: torch.nn.Module, device: str, override_config: dict | None) -> None:
    """Switch `model` to `packed_attention(device)`, unless the config names the kernel itself. A model whose
    transformers class lacks that kernel keeps its own and is padded."""
    choice = packed_attention(device)
    if choice is None or "attn_implementation" in (override_config or {}):
        return
    hf = model if hasattr(model, "set_attn_implementation") else model.model  # a critic's ValueModel wraps one
    try:
        hf.set_attn_implementation(choice)
    except (ValueError, ImportError) as err:  # transformers' refusal of a kernel the model does not support
        warnings.warn(f"use_remove_padding: {type(hf).__name__} cannot run {choice} ({err}); micro-batches are "
                      "padded instead", stacklevel=2)


def attention(model: torch.nn.Module) -> str | None:
    return getattr(model.config, "_attn_implementation", None)


def packing_pays(model: torch.nn.Module) -> bool:
    return attention(model) in VARLEN_ATTENTION


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
    input_ids, position_ids = batch.input_ids[mask], batch.position_ids[mask]
    if attention(model) == "flex_attention":
        input_ids, position_ids = pad_to_multiple(input_ids, position_ids, PACK_MULTIPLE)
    out = model(input_ids=input_ids[None].to(device), position_ids=position_ids[None].to(device), use_cache=False,
                **kwargs)
    logits = out.logits[0].float()
    if not kwargs:
        logits = logits[: len(keep)][keep.to(device)]
    full = logits.new_zeros((len(batch), length, logits.shape[-1]))
    full[rows[keep].to(device), (cols[keep] - start).to(device)] = logits
    return full


def pad_to_multiple(input_ids: torch.Tensor, position_ids: torch.Tensor, multiple: int) -> tuple[torch.Tensor, ...]:
    """The packed row followed by a dummy sequence (token 0 at positions 0, 1, ...) up to a multiple of `multiple`.
    Its positions restart at 0, so the document mask keeps it apart from the last real sequence."""
    extra = -len(input_ids) % multiple
    if not extra:
        return input_ids, position_ids
    return (torch.cat([input_ids, input_ids.new_zeros(extra)]),
            torch.cat([position_ids, torch.arange(extra, dtype=position_ids.dtype)]))
