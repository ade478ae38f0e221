"""Which attention the packed path runs (engines/packing.py) and the dummy sequence that pads a packed row. The
packed log-probs themselves are checked against a plain forward in test_fsdp.py."""

from __future__ import annotations

import pytest
import torch

from rlc_runtime.engines.packing import (
    packed_attention,
    packing_pays,
    pad_to_multiple,
    use_packed_attention,
)
from rlc_runtime.models import ValueModel
from rlc_runtime.tiny import build_model


def test_cuda_packs_with_flex_without_flash_attn_and_cpu_pads() -> None:
    pytest.importorskip("torch.nn.attention.flex_attention")
    from transformers.utils import is_flash_attn_2_available

    assert packed_attention("cpu") is None
    assert packed_attention("cuda") == ("flash_attention_2" if is_flash_attn_2_available() else "flex_attention")


@pytest.mark.parametrize("critic", [False, True])
def test_use_packed_attention_switches_the_model_unless_the_config_names_a_kernel(critic: bool) -> None:
    def model() -> torch.nn.Module:
        causal_lm = build_model("qwen2", 64)
        return ValueModel(causal_lm.model) if critic else causal_lm

    switched, named, on_cpu = model(), model(), model()
    use_packed_attention(switched, "cuda", {})  # only the config changes: nothing runs on the device
    use_packed_attention(named, "cuda", {"attn_implementation": "sdpa"})
    use_packed_attention(on_cpu, "cpu", {})
    assert switched.config._attn_implementation == "flex_attention" and packing_pays(switched)
    assert named.config._attn_implementation == "sdpa" and not packing_pays(named)
    assert on_cpu.config._attn_implementation == "sdpa" and not packing_pays(on_cpu)


def test_pad_to_multiple_appends_its_own_sequence() -> None:
    from transformers.masking_utils import find_packed_sequence_indices

    ids, pos = torch.tensor([5, 6, 7, 8, 9]), torch.tensor([0, 1, 2, 0, 1])
    padded_ids, padded_pos = pad_to_multiple(ids, pos, 4)
    assert padded_ids.tolist() == [5, 6, 7, 8, 9, 0, 0, 0]
    assert padded_pos.tolist() == [0, 1, 2, 0, 1, 0, 1, 2]
    # transformers' document ids: the dummy tokens are a third document, apart from the second sequence
    assert find_packed_sequence_indices(padded_pos[None]).tolist() == [[0, 0, 0, 1, 1, 2, 2, 2]]
    same_ids, same_pos = pad_to_multiple(ids[:4], pos[:4], 4)
    assert same_ids.tolist() == [5, 6, 7, 8] and same_pos.tolist() == [0, 1, 2, 0]
