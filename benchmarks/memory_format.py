"""Training step and inference (the forward pass of the teacher logits cache) of the teacher and
of every student on the CPU: convolution weights in PyTorch's default layout against channels-last
(the layout the networks keep). Calls interleaved, median.

    python benchmarks/memory_format.py [--batch-size 128] [--rounds 6]
"""

from __future__ import annotations

import argparse

import timm
import torch
from common import interleaved_medians, print_table, training_step

from distill.nets import STUDENTS

LAYOUTS = {"default": torch.contiguous_format, "channels-last": torch.channels_last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    x = torch.randn(args.batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch_size,))
    rows = []
    for name in ("digitnet", *STUDENTS):
        calls = {}
        for layout, memory_format in LAYOUTS.items():
            torch.manual_seed(0)
            model = timm.create_model(name).to(memory_format=memory_format).train()

            @torch.inference_mode()
            def infer(model=model) -> None:
                model.eval()(x)
                model.train()

            calls[(layout, "train")], calls[(layout, "infer")] = training_step(model, x, y), infer
        seconds = interleaved_medians(calls, args.rounds)
        row = [name]
        for kind in ("train", "infer"):
            default, last = (seconds[(layout, kind)] for layout in LAYOUTS)
            row += [f"{1000 * default:.1f}", f"{1000 * last:.1f}", f"{default / last:.2f}x"]
        rows.append(row)
    print_table(f"Batch {args.batch_size}, {torch.get_num_threads()} threads (median of "
                f"{3 * args.rounds}), default layout against channels-last",
                ["network", "training step, default (ms)", "channels-last (ms)", "speed-up",
                 "inference, default (ms)", "channels-last (ms)", "speed-up"], rows)


if __name__ == "__main__":
    main()
