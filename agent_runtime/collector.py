"""The cyclic garbage collector, set for a long-running server once it has started."""

from __future__ import annotations

import gc

# Allocations (less deallocations) between two young-generation collections; Python's
# default is 700. A turn allocates thousands of objects, nearly all freed by reference
# counting within the turn, so at 700 the collector ran about every tenth of a turn and
# walked what the turns in flight held at that moment: ~75 us a turn at c=32 of the burst
# phase. At 20,000 most of those objects are gone before it runs: ~25 us a turn
# (docs/benchmarks/README.md, "The garbage collector's young generation").
YOUNG_GENERATION_THRESHOLD = 20_000


def settle_after_start_up() -> None:
    """What start-up made (modules, the composed server, its caches) lives as long as the
    process: frozen out of the collector's way, a full collection walks only what turns
    made. Unfrozen, each walked ~140k objects (~50 ms, every few hundred turns at c=32)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
