"""`optim.override_optimizer_config` as the Megatron engine hands it to megatron-core's `OptimizerConfig`.

Transformer Engine is installed neither here nor on the GPU host, so `use_precision_aware_optimizer` (verl's
megatron scripts set it beside `optimizer_cpu_offload`) cannot reach megatron-core: its `OptimizerConfig` reads
Transformer Engine's version when the flag is on. The engine leaves the flag out, with the compiler's warning, and
megatron runs its standard optimizer (fp32 master weights and moments). Built against megatron-core as installed.
"""

import importlib.util
import warnings

import pytest
import torch
from megatron.core.optimizer import OptimizerConfig

from rlc.config.engine import PRECISION_AWARE_WITHOUT_TE
from rlc_runtime.engines.megatron import _optimizer_overrides

VERL = {"optimizer_offload_fraction": 1, "overlap_cpu_optimizer_d2h_h2d": True,
        "use_precision_aware_optimizer": True, "optimizer_cpu_offload": True, "eps": 1e-6}
"""What verl's `grpo_trainer/run_qwen3-235b_megatron_96gb.sh` (and five others) put in the block."""
BASE = {"optimizer": "adam", "lr": 1e-6, "bf16": True, "use_distributed_optimizer": True}


@pytest.mark.skipif(importlib.util.find_spec("transformer_engine") is not None, reason="Transformer Engine present")
def test_without_transformer_engine_the_optimizer_is_built_without_the_precision_aware_flag() -> None:
    with pytest.raises(TypeError):  # why the flag cannot pass: megatron-core compares TE's version (None here)
        OptimizerConfig(**BASE, use_precision_aware_optimizer=True, optimizer_cpu_offload=True)
    with pytest.warns(UserWarning) as caught:
        fields = _optimizer_overrides(VERL)
    assert [str(w.message) for w in caught] == [PRECISION_AWARE_WITHOUT_TE]
    assert fields == {"optimizer_offload_fraction": 1, "overlap_cpu_optimizer_d2h_h2d": True,
                      "optimizer_cpu_offload": True, "adam_eps": 1e-6}
    config = OptimizerConfig(**BASE, **fields)
    assert not config.use_precision_aware_optimizer and config.optimizer_cpu_offload and config.adam_eps == 1e-6
    assert not config.use_precision_aware_optimizer_no_fp8_or_ds_fp8  # the distributed optimizer keeps fp32 masters


@pytest.mark.skipif(importlib.util.find_spec("transformer_engine") is not None, reason="Transformer Engine present")
def test_without_transformer_engine_the_precision_aware_dtypes_stay_fp32() -> None:
    """A bf16 moment belongs to the precision-aware optimizer; left in without it, megatron-core asserts."""
    with pytest.raises(AssertionError, match="exp_avg_dtype can only be fp32"):
        OptimizerConfig(**BASE, exp_avg_dtype=torch.bfloat16)
    with pytest.warns(UserWarning):
        fields = _optimizer_overrides(VERL | {"exp_avg_dtype": "bf16", "main_grads_dtype": "bf16"})
    assert "exp_avg_dtype" not in fields and "main_grads_dtype" not in fields
    config = OptimizerConfig(**BASE, **fields)
    assert config.exp_avg_dtype == config.main_grads_dtype == torch.float32


def test_other_keys_pass_through_without_a_warning_and_dtypes_as_torch_dtypes() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _optimizer_overrides({"eps": 1.0, "optimizer_cpu_offload": False, "exp_avg_sq_dtype": "fp32"}) == \
            {"adam_eps": 1.0, "optimizer_cpu_offload": False, "exp_avg_sq_dtype": torch.float32}
