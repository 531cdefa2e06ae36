"""Distillation sweep: every recipe distilled from one teacher, end to end, with the teacher
logits cache (the teacher runs once for all recipes) against without it (the teacher runs on
every batch of every student). Also checks that both give the same metrics.

The cache removes the teacher's forward passes and nothing else, so the speed-up can be no more
than (students' steps + recipes x teacher pass) / (students' steps + one teacher pass) a batch;
the script measures those per-batch costs too and prints that ceiling.

    python benchmarks/distill_sweep.py [--teacher runs/teacher] [--epochs 2] [--train-batches 100]
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import timm
import torch
from common import interleaved_medians, print_table, training_step

from distill.data import IMAGE_SIZE
from distill.nets import CONV_MEMORY_FORMAT
from distill.pipeline import train_student
from distill.recipes import available_recipes, load_recipe
from distill.training import Limits


def sweep(teacher: Path, runs: Path, cache: bool, epochs: int, limits: Limits) -> tuple[float, dict]:
    started = time.perf_counter()
    figures = {}
    for name in available_recipes():
        recipe = load_recipe(name)
        if recipe.distillation.method != "kd":  # the sweep measured here: the kd recipes
            continue
        recipe = dataclasses.replace(recipe, schedule=dataclasses.replace(recipe.schedule,
                                                                          epochs=epochs))
        [report] = train_student(recipe, [teacher], runs, "benchmark", twin=False,
                                 teacher_cache=cache, limits=limits, progress=False)
        figures[name] = report["evaluation"]["test"]
    return time.perf_counter() - started, figures


def per_batch_ceiling(recipes: list[str], batch_size: int = 128) -> tuple[float, float, float]:
    """Milliseconds of one teacher forward pass and of all the students' training steps on one
    batch, and the sweep speed-up they allow when nothing else costs anything."""
    torch.manual_seed(0)
    x = torch.randn(batch_size, 1, IMAGE_SIZE, IMAGE_SIZE).contiguous(
        memory_format=CONV_MEMORY_FORMAT)
    y = torch.randint(0, 10, (batch_size,))
    teacher = timm.create_model("digitnet").eval()

    @torch.inference_mode()
    def teacher_pass() -> None:
        teacher(x)

    calls = {"teacher": teacher_pass}
    for name in recipes:
        calls[name] = training_step(timm.create_model(load_recipe(name).student), x, y)
    ms = {key: seconds * 1000 for key, seconds in interleaved_medians(calls, rounds=3).items()}
    students = sum(ms[name] for name in recipes)
    return ms["teacher"], students, (students + len(recipes) * ms["teacher"]) / (students + ms["teacher"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", type=Path, default=Path("runs/teacher"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-batches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    limits = Limits(train_batches=args.train_batches, val_batches=1, test_size=2000)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    figures = []
    for _ in range(args.repeats):  # interleaved, so that a drifting machine treats both alike
        for cache in (False, True):
            with tempfile.TemporaryDirectory() as runs:  # each cached sweep computes its cache
                took, test = sweep(args.teacher, Path(runs), cache, args.epochs, limits)
            seconds[cache].append(took)
            figures.append(test)
    online, cached = (statistics.median(seconds[cache]) for cache in (False, True))
    recipes = len(figures[0])
    print_table(f"Distilling {recipes} recipes, {args.epochs} epochs of {args.train_batches} "
                f"batches each, end to end (median of {args.repeats})",
                ["teacher", "seconds", "each repetition", "speed-up"],
                [["run on every batch", f"{online:.0f}",
                  ", ".join(f"{t:.0f}" for t in seconds[False]), "1.00"],
                 ["logits cache (computed once, included)", f"{cached:.0f}",
                  ", ".join(f"{t:.0f}" for t in seconds[True]), f"{online / cached:.2f}x"]])
    teacher_ms, students_ms, ceiling = per_batch_ceiling(list(available_recipes()))
    print(f"\nA batch of 128: teacher forward pass {teacher_ms:.1f} ms, the {recipes} students' "
          f"training steps {students_ms:.1f} ms together; the cache's ceiling without fixed costs: "
          f"{ceiling:.2f}x")
    same = all(test == figures[0] for test in figures)
    print(f"\nIdentical test metrics with and without the cache: {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
