"""Client-side rate limiting, as client-go's token bucket: `qps` requests a second on
average, `burst` at once after a quiet spell (kube-scheduler runs with 50 and 100).
kubernetes-asyncio has none; without one a controller's cold start can flood the API
server with thousands of writes in a second."""

from __future__ import annotations

import asyncio


class TokenBucket:
    def __init__(self, qps: float, burst: int) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"qps must be > 0 and burst >= 1, got qps={qps}, burst={burst}")
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    async def acquire(self) -> None:
        """Wait for a token (loop time, so tests under looptime do not wait for real)."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if self._last is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
            self._last = now
            if self._tokens >= 1 - 1e-6:  # float and clock rounding must not stall
                self._tokens = max(0.0, self._tokens - 1)
                return
            await asyncio.sleep((1 - self._tokens) / self.qps)
