"""Shared helpers: repeated timing with the median, and a plain table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.cli import quiet_lightning

# The benchmarks print their own tables; Lightning's start-up notes (devices, tips), once per
# training run, would bury them, as they would the `distill` commands' output.
quiet_lightning()


def median_seconds(run: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def training_step(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], None]:
    """One AdamW step of cross-entropy on (x, y), as a call to time."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def interleaved_medians(calls: dict[Hashable, Callable[[], object]], rounds: int,
                        per_round: int = 3) -> dict[Hashable, float]:
    """Median seconds of each call, timed in interleaved rounds so that a machine whose speed
    drifts treats every call alike; each round starts with one untimed warm-up call."""
    times: dict[Hashable, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            call()
            for _ in range(per_round):
                started = time.perf_counter()
                call()
                times[key].append(time.perf_counter() - started)
    return {key: statistics.median(values) for key, values in times.items()}
