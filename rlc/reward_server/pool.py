"""Verifiers that read model output run here: in worker processes, each call under a hard deadline.

Design decisions, and why:
- pebble's ProcessPool rather than concurrent.futures: it kills the worker whose call overruns its deadline (and
  starts a replacement), the only way to stop CPU-bound Python such as a sympy simplification; and a call whose
  request is cancelled (the client went away) is killed too, instead of running on for nobody.
- The forkserver start method: the server process has threads (anyio's, pebble's) when the pool starts or
  refills, and fork() from a threaded process can hand the child a lock held forever. Nothing is preloaded into
  the fork server: starting a worker then never waits for imports (which would hold up the server's start, and
  a restarted server must take its clients' retries quickly); each worker imports and warms math-verify itself,
  and a worker that replaces a killed one is ready a second or two later.
- Each worker caps its own address space (`WORKER_MEMORY_MB`): an output crafted to make a parser build a huge
  object fails that call with MemoryError instead of taking the machine's memory.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
from collections.abc import Callable
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessPool

from rlc.reward_server.verifiers import Unscorable, score_text

WORKER_MEMORY_MB = 4096

T = TypeVar("T")


def _start_worker(memory_mb: int) -> None:
    limit = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # math-verify builds its parsers and sympy its caches on first use: pay for that here, not in a request.
    score_text("math_verifiable", "\\boxed{\\dfrac{1}{2}}", {"value": "0.5"})


class VerifierPool:
    """`await pool.run(fn, *args)`: `fn(*args)` in a worker process, or `Unscorable` when it overran `timeout_s`,
    died, or ran out of memory; any other exception of `fn` is re-raised as it was."""

    def __init__(self, workers: int, timeout_s: float, memory_mb: int = WORKER_MEMORY_MB) -> None:
        context = multiprocessing.get_context("forkserver")
        self.timeout_s = timeout_s
        self._pool = ProcessPool(max_workers=workers, initializer=_start_worker, initargs=(memory_mb,),
                                 context=context)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        future = self._pool.schedule(fn, args=args, timeout=self.timeout_s)
        try:
            return await asyncio.wrap_future(future)
        except TimeoutError:
            raise Unscorable(f"the verifier took longer than {self.timeout_s:g} s and was stopped") from None
        except ProcessExpired as e:
            raise Unscorable(f"the verifier's worker process died ({e})") from None
        except MemoryError:
            raise Unscorable("the verifier ran out of memory") from None
        except RecursionError:
            raise Unscorable("the verifier recursed too deeply") from None

    def start(self) -> None:
        """Start the workers now, in the background, so that the first request finds them ready or nearly; the
        server answers meanwhile (a restarted server must take its clients' retries as soon as it can)."""
        self._pool.schedule(score_text, args=("exact_match", "ready", {"value": "ready"}))

    def close(self) -> None:
        self._pool.stop()
        self._pool.join(timeout=10)
