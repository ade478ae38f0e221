"""Code that runs inside vLLM's worker (loaded by name through `worker_extension_cls`).

Weights arrive as (Hugging Face name, tensor) pairs and are loaded in place with the model runner's
`reload_weights`, vLLM's supported path that also re-runs its post-load processing (fused qkv, quantisation...).
This module must stay importable without the rest of the runtime: vLLM imports it in its own worker process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

# What vLLM says of the modules a bucket does not cover; every bucket covers only some, by design.
_PARTIAL_RELOAD_WARNINGS = ("Following weights were not loaded", "Failed to load weights")


class WeightSyncExtension:
    """Mixed into vLLM's worker class; methods are called with `LLM.collective_rpc(name, args=...)`."""

    model_runner: Any

    def rlc_load_weights(self, named_tensors: Sequence[tuple[str, Any]]) -> int:
        with _quiet_partial_reload():
            self.model_runner.reload_weights(weights_iterator=iter(named_tensors))
        _refresh_cpu_gemms(self.model_runner.model)
        return len(named_tensors)


@contextmanager
def _quiet_partial_reload() -> Iterator[None]:
    """Drop vLLM's per-bucket "not loaded" warnings (hundreds of names a step); its other messages stay."""
    def keep(record: logging.LogRecord) -> bool:
        return not any(warning in str(record.msg) for warning in _PARTIAL_RELOAD_WARNINGS)

    handlers = logging.getLogger("vllm").handlers
    for handler in handlers:
        handler.addFilter(keep)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(keep)


def _refresh_cpu_gemms(model: Any) -> None:
    """vLLM on CPU prepacks GEMM weights into a closure (`layer.cpu_linear`). Layers that reload re-pack, but a
    tied LM head is never reloaded itself (its weight arrives as the embedding's), so its closure would keep
    serving the old logits. Re-dispatch every layer that kept its weight tensor, which is exactly the tied ones."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    for module in model.modules():
        weight = getattr(module, "weight", None)
        if hasattr(module, "cpu_linear") and weight is not None and weight.numel() > 0:
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
