"""One federation timed round by round, without MLflow: what `imaging.py` and `gpu.py` measure.

The real federation (`pipelines.federation.Federation`: placement, key exchange, set-up,
rounds, the final evaluation), stopped whatever happens. Benchmark scripts import it from
their own folder (``from timed_run import timed_federation``); it prints nothing.

    python -c "import sys; sys.path.insert(0, 'benchmarks'); from timed_run import timed_federation; \
help(timed_federation)"
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from orchestrator.records import RoundRecord, SetupReport
from pipelines.federation import Federation
from pipelines.spec import LoadedPipeline


@dataclass(frozen=True)
class TimedRun:
    report: SetupReport
    setup_s: float
    records: list[RoundRecord]  # one per round, in order
    final: Any  # the orchestrator's evaluation of the last global model (GlobalEval)
    placement: dict[str, Any]  # silo: where and with what it ran (num_cpus, num_gpus)

    @property
    def later(self) -> list[RoundRecord]:
        """Rounds 2..: round 1 pays start-up (imports, CUDA); all rounds if there is one."""
        return self.records[1:] or self.records


def timed_federation(
    loaded: LoadedPipeline,
    rounds: int,
    folder: Path,
    name: str,
    watch: Callable[[int], None] | None = None,
) -> TimedRun:
    """Set up, run ``rounds`` rounds and evaluate; ``watch(r)`` runs after set-up (r = 0) and
    after each round r, while the actors are alive (what a benchmark samples: GPUs, processes)."""
    federation = Federation(loaded, f"{name}-{time.time_ns()}", folder, resume=False)
    try:
        started = time.perf_counter()
        report = federation.setup()
        setup_s = time.perf_counter() - started
        records = []
        for r in range(rounds + 1):
            if r:
                records.append(ray.get(federation.orchestrator.run_round.remote(r)))
            if watch is not None:
                watch(r)
        final = ray.get(federation.orchestrator.evaluate.remote())
    finally:
        federation.stop()
    return TimedRun(report, setup_s, records, final, dict(federation.placement))
