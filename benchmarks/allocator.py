"""A training step with glibc's thresholds set by `distill.allocator.keep_freed_memory` (what the
`distill` command does at start) against glibc's defaults, each in a process of its own (the
setting holds for the life of a process), in interleaved rounds; page faults counted per step.

    python benchmarks/allocator.py [--model digitnet] [--batch-size 128] [--steps 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def child(model: str, batch_size: int, steps: int, tuned: bool) -> None:
    """One process: the allocator as asked, then `steps` timed steps after 5 untimed ones."""
    if tuned:
        from distill.allocator import keep_freed_memory

        assert keep_freed_memory(), "not glibc: nothing to measure"
    import timm
    import torch
    from common import training_step

    import distill.nets  # noqa: F401 - registers the networks with timm
    from distill.nets import CONV_MEMORY_FORMAT

    torch.manual_seed(0)
    network = timm.create_model(model).train()
    x = torch.randn(batch_size, 1, 28, 28).contiguous(memory_format=CONV_MEMORY_FORMAT)
    y = torch.randint(0, 10, (batch_size,))
    step = training_step(network, x, y)
    for _ in range(5):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - started) / steps
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    print(json.dumps({"seconds": seconds, "faults": faults}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="digitnet")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=["default", "tuned"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.model, args.batch_size, args.steps, args.child == "tuned")
        return
    results: dict[str, list[dict]] = {"default": [], "tuned": []}
    for _ in range(args.rounds):
        for variant in results:
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--model",
                                  args.model, "--batch-size", str(args.batch_size), "--steps",
                                  str(args.steps)], check=True, capture_output=True, text=True)
            results[variant].append(json.loads(out.stdout.splitlines()[-1]))
    median = {v: statistics.median(r["seconds"] for r in runs) for v, runs in results.items()}
    faults = {v: statistics.median(r["faults"] for r in runs) for v, runs in results.items()}
    print(f"\n{args.model}, batch {args.batch_size}, median of {args.rounds} processes of "
          f"{args.steps} steps each\n")
    print("| allocator | ms a step | page faults a step |")
    print("| --- | --- | --- |")
    for variant, label in (("default", "glibc's defaults"), ("tuned", "keep_freed_memory")):
        print(f"| {label} | {1000 * median[variant]:.1f} | {faults[variant]:,.0f} |")
    print(f"\nkeep_freed_memory: {median['default'] / median['tuned']:.2f}x as fast")


if __name__ == "__main__":
    main()
