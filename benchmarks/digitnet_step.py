"""DigitNet's training step on the CPU: the first version (timm's GRN, 7x7 depthwise kernels in
every stage, default memory layout, patchify stem) against today's (a GRN computing the same
function in fewer passes, 3x3 kernels from the 4x4 stage on, channels-last weights, a 3x3 conv at
full resolution in the stem), each speed-up alone, today's with the old stem (what the more
accurate stem costs), and today's step on two augmented views of the batch (`distill teacher`'s
default batch augmentation: twice the samples a step). Steps interleaved, median per variant.

    python benchmarks/digitnet_step.py [--batch-size 128] [--rounds 6]
"""

from __future__ import annotations

import argparse

import torch
from common import interleaved_medians, print_table, training_step
from timm.layers.grn import GlobalResponseNorm

from distill.nets import DigitNet


def digitnet(kernel_sizes, fast_grn: bool, channels_last: bool, stem: str = "patchify") -> DigitNet:
    model = DigitNet(kernel_sizes=kernel_sizes, stem=stem)
    if not fast_grn:
        for module in model.modules():
            if hasattr(module, "grn"):
                module.grn = GlobalResponseNorm(module.grn.weight.numel())
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(memory_format=layout).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    variants = {
        "first version: timm GRN, 7x7 kernels everywhere, default layout":
            digitnet(7, fast_grn=False, channels_last=False),
        "faster GRN only": digitnet(7, fast_grn=True, channels_last=False),
        "3x3 kernels at 4x4 and 2x2 only": digitnet((7, 7, 3, 3), fast_grn=False,
                                                    channels_last=False),
        "channels-last only": digitnet(7, fast_grn=False, channels_last=True),
        "all three": digitnet((7, 7, 3, 3), fast_grn=True, channels_last=True),
        "today: all three, full-resolution stem": digitnet((7, 7, 3, 3), fast_grn=True,
                                                           channels_last=True, stem="conv3x3"),
    }
    x = torch.randn(args.batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch_size,))
    steps = {name: training_step(m, x, y) for name, m in variants.items()}
    two_views = "today, two augmented views of each image (the default teacher)"
    variants[two_views] = variants["today: all three, full-resolution stem"]
    steps[two_views] = training_step(variants[two_views], torch.cat([x, x]), y.repeat(2))
    seconds = interleaved_medians(steps, args.rounds)
    base = seconds[next(iter(variants))]
    rows = []
    for name, model in variants.items():
        step = seconds[name]
        params = sum(p.numel() for p in model.parameters())
        rows.append([name, f"{params:,}", f"{1000 * step:.0f}", f"{430 * step:.0f}",
                     f"{base / step:.2f}x"])
    print_table(f"DigitNet training step, batch {args.batch_size}, {torch.get_num_threads()} "
                f"threads (median of {3 * args.rounds})",
                ["variant", "parameters", "ms/step", "s per epoch (430 steps)", "speed-up"], rows)


if __name__ == "__main__":
    main()
