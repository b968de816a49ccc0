"""Property: whatever the request sizes and arrival gaps, every caller gets exactly its own
rows' results, in order, and every row is computed exactly once."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packserve.runtime import Prediction
from packserve.serve.batching import Batcher
from packserve.serve.offload import CostModel

requests = st.lists(
    st.tuples(st.integers(1, 12), st.sampled_from([0.0, 0.0, 0.0005, 0.002])),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reqs=requests,
    max_batch=st.integers(1, 16),
    max_wait_ms=st.sampled_from([0.0, 1.0, 5.0]),
    delay=st.sampled_from([0.0, 0.001]),
    concurrency=st.integers(1, 2),
    inline_ms=st.sampled_from([0.0, 50.0]),
)
def test_every_request_gets_exactly_its_rows_in_order(
    reqs, max_batch, max_wait_ms, delay, concurrency, inline_ms
):
    lock = threading.Lock()
    computed: list[int] = []

    def run(feeds: dict[str, np.ndarray]) -> Prediction:
        ids = feeds["x"][:, 0]
        with lock:
            computed.extend(int(i) for i in ids)
        if delay:
            time.sleep(delay)
        # a value that depends on the row only, so a mix-up cannot go unnoticed
        return Prediction(values=ids * 10.0 + 1.0)

    async def main() -> list[list[float]]:
        cost = CostModel(inline_ms / 1000.0)  # the server's inline rule, fed every call

        def timed(feeds: dict[str, np.ndarray]) -> Prediction:
            t0 = time.perf_counter()
            out = run(feeds)
            cost.observe(len(feeds["x"]), time.perf_counter() - t0)
            return out

        b = Batcher(timed, max_batch_size=max_batch, max_wait_ms=max_wait_ms, max_queue=1000,
                    concurrency=concurrency, inline=cost.inline)
        b.start()
        tasks = []
        next_id = 0
        for size, gap in reqs:
            ids = np.arange(next_id, next_id + size, dtype=np.float64).reshape(-1, 1)
            next_id += size
            tasks.append(asyncio.ensure_future(b.submit({"x": ids})))
            if gap:
                await asyncio.sleep(gap)
        out = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert b.queue_depth == 0 and b.in_flight == 0
        b.close()
        return [p.values.tolist() for p in out]  # type: ignore[union-attr]

    results = asyncio.run(main())
    next_id = 0
    for (size, _), got in zip(reqs, results, strict=True):
        assert got == [i * 10.0 + 1.0 for i in range(next_id, next_id + size)]
        next_id += size
    assert sorted(computed) == list(range(next_id))
