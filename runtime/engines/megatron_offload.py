"""CPU offload of a Megatron engine's state between the phases that use it (verl's `megatron.param_offload`,
`grad_offload`, `optimizer_offload`).

What moves, as in verl's megatron workers: the model's parameters (the DDP parameter buffer, or each parameter's
own tensor for the reference and without the distributed optimizer); DDP's gradient buffers; the optimizer's
fp32 master weights and Adam moments. Each is released from the device when its phase ends and brought back
before the next phase that needs it: weights for forward passes and weight export, everything for an update,
weights and optimizer for a checkpoint.

How: the device storage of each tensor is resized to nothing after its bytes are copied into a host buffer
(pinned on GPU, allocated once and reused), and resized and refilled on the way back. Resizing in place, rather
than assigning new tensors, keeps every view valid (parameters are views into DDP's buffer, `main_grad` into
the gradient buffer, the optimizer's state is keyed by its parameters and megatron keeps its own lists of
them), so neither megatron nor the optimizer notices. A storage shared by several of these tensors moves once,
and the optimizer never moves a storage that belongs to the model (fp32 master weights are views of the fp32
parameters when there is no bf16 copy).

Gradients are zero between updates (the optimizer step zeroes the buffer), so they are not copied: the buffer is
released and comes back zeroed, as verl does. verl frees them with `param_offload`; rlc does too, and also when
`grad_offload` alone is set (verl reads that key but does nothing with it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch

PARTS = ("params", "grads", "optimizer")


class _Held:
    """One device storage, released; and its bytes on the host (None for gradients, which come back zero)."""

    def __init__(self, tensor: torch.Tensor, host: torch.Tensor | None) -> None:
        self.storage = tensor.untyped_storage()
        self.device = tensor.device
        self.nbytes = self.storage.nbytes()
        self.host = host

    def bytes_view(self) -> torch.Tensor:
        return torch.empty(0, dtype=torch.uint8, device=self.device).set_(self.storage)


class Offloader:
    """Moves named groups of device tensors (`PARTS`) to the host and back. `sources` gives each group's tensors
    as they are now (optimizer state appears at the first step); `offloaded` is the groups the config offloads.
    The others are never touched."""

    def __init__(self, sources: dict[str, Callable[[], Iterable[torch.Tensor]]], offloaded: Iterable[str],
                 pin: bool) -> None:
        self.sources, self.offloaded, self.pin = sources, set(offloaded) & set(sources), pin
        self.away: dict[str, list[_Held]] = {}  # groups on the host now
        # host buffers, reused from one offload to the next (pinning memory is slow): the i-th storage of a group
        # is the same tensor each time, as modules and optimizer state keep their order
        self.hosts: dict[str, list[torch.Tensor]] = {part: [] for part in PARTS}

    @contextlib.contextmanager
    def resident(self, parts: Iterable[str]) -> Iterator[None]:
        """The groups `parts` on the device for the block; what this call brought back goes back after it (a
        nested call finds them resident and moves nothing)."""
        brought = [part for part in parts if part in self.away]
        for part in brought:
            self.load(part)
        try:
            yield
        finally:
            for part in brought:
                self.offload(part)

    def offload_all(self) -> None:
        for part in PARTS:
            if part in self.offloaded and part not in self.away:
                self.offload(part)

    @torch.no_grad()
    def offload(self, part: str) -> None:
        keep = part != "grads"  # zero between updates: nothing to copy
        if self.pin:  # work of other streams (a hybrid optimizer's copies back to the GPU) lands first
            torch.cuda.synchronize()
        seen = {key for held in self.away.values() for key in map(_key_of_held, held)}
        if part == "optimizer":  # never the model's own storage (fp32 master weights can be its views)
            seen |= {_key(t) for t in self.sources["params"]()}
        held = []
        for tensor in self.sources[part]():
            key = _key(tensor)
            if key in seen or tensor.untyped_storage().nbytes() == 0:
                continue
            seen.add(key)
            entry = _Held(tensor, self._host(part, len(held), tensor) if keep else None)
            if entry.host is not None:
                entry.host.copy_(entry.bytes_view(), non_blocking=self.pin)
            held.append(entry)
        del self.hosts[part][len(held):]
        if self.pin and held:  # the copies land before the device memory is released
            torch.cuda.current_stream().synchronize()
        for entry in held:
            entry.storage.resize_(0)
        self.away[part] = held

    @torch.no_grad()
    def load(self, part: str) -> None:
        for entry in self.away.pop(part):
            entry.storage.resize_(entry.nbytes)
            view = entry.bytes_view()
            if entry.host is None:
                view.zero_()
            else:
                view.copy_(entry.host, non_blocking=self.pin)

    def _host(self, part: str, index: int, tensor: torch.Tensor) -> torch.Tensor:
        nbytes, hosts = tensor.untyped_storage().nbytes(), self.hosts[part]
        if index < len(hosts) and hosts[index].numel() == nbytes:
            return hosts[index]
        host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pin)
        hosts[index:index + 1] = [host]
        return host


def _key(tensor: torch.Tensor) -> int:
    """The identity of a tensor's storage (shared by all its views)."""
    return tensor.untyped_storage()._cdata


def _key_of_held(held: _Held) -> int:
    return held.storage._cdata


def optimizer_tensors(optimizer: object, device: torch.device) -> Iterator[torch.Tensor]:
    """The master weights and state tensors on `device` of megatron's (possibly chained) optimizer; state
    already on the CPU (Adam's step counts, a hybrid optimizer's CPU part) stays where it is."""
    for chained in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(chained, "optimizer", None)
        if inner is None:  # a rank that holds no parameters
            continue
        tensors = [p for group in inner.param_groups for p in group["params"]]
        tensors += [v for state in inner.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
        yield from (t for t in tensors if t.device.type == device.type)
