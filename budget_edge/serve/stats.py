"""Per-model inference statistics in Triton's shape (`GET /v2/models/{name}/stats`).

tritonclient's `get_inference_statistics` reads this; the Prometheus metrics
(`/metrics`) say the same for scrapers. Durations are nanoseconds, as Triton's.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def as_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class ModelStats:
    """What one served model has done since the server started."""

    name: str
    version: str
    inference_count: int = 0  # images answered
    execution_count: int = 0  # model runs (a request's chunks)
    last_inference_ms: int = 0  # when the last request succeeded, ms since the epoch
    success: Duration = field(default_factory=Duration)  # whole requests
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)  # waiting for the model's turn
    compute_infer: Duration = field(default_factory=Duration)  # the model running
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self, waited_s: float, ran_s: float) -> None:
        with self._lock:
            self.execution_count += 1
            self.queue.add(waited_s)
            self.compute_infer.add(ran_s)

    def request(self, seconds: float, images: int | None) -> None:
        """A request answered (`images`) or failed (None)."""
        with self._lock:
            if images is None:
                self.fail.add(seconds)
                return
            self.success.add(seconds)
            self.inference_count += images
            self.last_inference_ms = int(time.time() * 1000)

    def as_triton(self) -> dict[str, Any]:
        with self._lock:
            return {
                "model_stats": [
                    {
                        "name": self.name,
                        "version": self.version,
                        "last_inference": self.last_inference_ms,
                        "inference_count": self.inference_count,
                        "execution_count": self.execution_count,
                        "inference_stats": {
                            "success": self.success.as_json(),
                            "fail": self.fail.as_json(),
                            "queue": self.queue.as_json(),
                            "compute_input": Duration().as_json(),
                            "compute_infer": self.compute_infer.as_json(),
                            "compute_output": Duration().as_json(),
                        },
                        "batch_stats": [],
                    }
                ]
            }
