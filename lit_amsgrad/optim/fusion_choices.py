"""Inductor's fusion heuristics, narrowed to what a fused optimizer step wants.

Its own module because importing ``torch._inductor.choices`` takes 1-2 s: ``fused.py``
imports this only when a step first compiles.
"""

from __future__ import annotations

from typing import Any

from torch._inductor.choices import InductorChoices

#: more than the scalars tensor (at most 16 float64 reads) that every loop of a step shares
MIN_SHARED_BYTES = 256


class OneLoopPerTensor(InductorChoices):
    """One loop per tensor, with that tensor's reductions (AdaShift's phi(g^2)) inside it.

    A horizontal fusion (two loops that read the same data, neither feeding the other) is
    allowed only when the two share a real buffer, not just the scalars tensor every loop
    reads: so a tensor's reduction joins its update loop, and no two tensors' updates are
    streamed by one loop (inductor's default fused up to 16 same-sized tensors that way,
    which streams 7-9 buffers per tensor at once; at 60 tensors of 10M parameters that made
    Adam's step 1.3x torch's fused one on a 2-core CPU). Inductor's distance check is
    dropped: it keeps far-apart nodes apart so as not to lengthen intermediate buffers' lives,
    and a step has none (it writes into its inputs); it had kept half of AdaShift's
    reductions out of their update loops, whose final writes sit at the end of the graph.
    """

    @staticmethod
    def can_fuse_horizontal(scheduler: Any, node1: Any, node2: Any, shared_data_score: int) -> bool:
        return shared_data_score >= MIN_SHARED_BYTES

    def uuid(self) -> str:
        """Part of inductor's FX graph cache key. ``per_compile``: since the rule is installed
        for each compile (``fused.compile_graph``); before, a kernel compiled after another
        compile in its thread was built with inductor's default fusion and cached under this
        key, and the new key keeps such entries from being served."""
        return f"lit_amsgrad.OneLoopPerTensor(min_shared_bytes={MIN_SHARED_BYTES}, per_compile)"
