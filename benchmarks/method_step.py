"""Method step cost: one distillation training step of a student under each method, relative to
kd's in the same run (interleaved rounds, median). The logit methods read the teacher's cached
logits, as `distill student` does; fitnet runs the teacher on every batch (it needs its features),
so its step includes a teacher forward pass.

    python benchmarks/method_step.py [--student convnet_tiny] [--rounds 5]
"""

from __future__ import annotations

import argparse

import torch
from common import interleaved_medians, print_table

from distill.distillation import Distiller
from distill.methods import METHODS
from distill.nets import CONV_MEMORY_FORMAT, DigitNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--student", default="convnet_tiny")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher = DigitNet().eval()
    x = torch.randn(args.batch_size, 1, 28, 28).contiguous(memory_format=CONV_MEMORY_FORMAT)
    y = torch.randint(0, 10, (args.batch_size,))
    positions = torch.arange(args.batch_size)
    cached = torch.zeros(1, 60_000, 10)  # one epoch's table, as the cache hands it over
    with torch.no_grad():
        cached[0, positions] = teacher(x).float()

    def step_of(name: str):
        method = METHODS[name](METHODS[name].Params(), seed=0)
        module = Distiller(teacher, args.student, method,
                           teacher_logits=None if method.needs_features else cached)
        module.train()
        trained = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trained, lr=1e-3)

        def step() -> None:
            _, terms = module.losses((x, y, positions, 0), batch_idx=0)
            optimizer.zero_grad(set_to_none=True)
            sum(terms.values()).backward()
            optimizer.step()

        return step

    seconds = interleaved_medians({name: step_of(name) for name in METHODS}, args.rounds)
    kd = seconds["kd"]
    print_table(f"{args.student}: one training step of {args.batch_size} images, by method "
                f"(median of {args.rounds} interleaved rounds of 3, {torch.get_num_threads()} "
                "threads)", ["method", "ms per step", "relative to kd"],
                [[name, f"{1000 * s:.1f}", f"{s / kd:.2f}"] for name, s in seconds.items()])


if __name__ == "__main__":
    main()
