"""Distillation sweep: every recipe distilled from one teacher, end to end, with the teacher
logits cache (the teacher runs once for all recipes) against without it (the teacher runs on
every batch of every student). Also checks that both give the same metrics.

    python benchmarks/distill_sweep.py [--teacher runs/teacher] [--epochs 2] [--train-batches 100]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from common import print_table

from distill.recipes import available_recipes, load_recipe
from distill.runs import train_student
from distill.training import Limits


def sweep(teacher: Path, runs: Path, cache: bool, epochs: int, limits: Limits) -> tuple[float, dict]:
    started = time.perf_counter()
    figures = {}
    for name in available_recipes():
        recipe = load_recipe(name)
        recipe = dataclasses.replace(recipe, schedule=dataclasses.replace(recipe.schedule,
                                                                          epochs=epochs))
        [report] = train_student(recipe, teacher, runs, "benchmark", twin=False,
                                 teacher_cache=cache, limits=limits, progress=False)
        figures[name] = report["evaluation"]["test"]
    return time.perf_counter() - started, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", type=Path, default=Path("runs/teacher"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-batches", type=int, default=100)
    args = parser.parse_args()
    limits = Limits(train_batches=args.train_batches, val_batches=1, test_size=2000)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        online, online_figures = sweep(args.teacher, Path(a), False, args.epochs, limits)
        cached, cached_figures = sweep(args.teacher, Path(b), True, args.epochs, limits)
    recipes = len(online_figures)
    print_table(f"Distilling {recipes} recipes, {args.epochs} epochs of {args.train_batches} "
                "batches each, end to end", ["teacher", "seconds", "speed-up"],
                [["run on every batch", f"{online:.0f}", "1.00"],
                 ["logits cache (computed once, included)", f"{cached:.0f}",
                  f"{online / cached:.2f}x"]])
    same = online_figures == cached_figures
    print(f"\nIdentical test metrics with and without the cache: {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
