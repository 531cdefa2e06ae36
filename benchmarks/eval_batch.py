"""Evaluation batch size: validation and test images go through a network in batches of
data.EVAL_BATCH. This times the teacher and every recipe's student on 2,048 images at several
batch sizes, as milliseconds per 128 images, against batches of 1000 (the size used before), and
checks that the logits do not depend on the batch size.

    python benchmarks/eval_batch.py [--sizes 128 256 512 1000]
"""

from __future__ import annotations

import argparse

import timm
import torch
from common import interleaved_medians, print_table

from distill.data import EVAL_BATCH, IMAGE_SIZE
from distill.nets import CONV_MEMORY_FORMAT
from distill.recipes import available_recipes, load_recipe

IMAGES = 2048
BASELINE = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, BASELINE])
    args = parser.parse_args()
    sizes = sorted({*args.sizes, BASELINE})
    torch.manual_seed(0)
    x = torch.randn(IMAGES, 1, IMAGE_SIZE, IMAGE_SIZE).contiguous(memory_format=CONV_MEMORY_FORMAT)
    models = {"teacher (digitnet)": timm.create_model("digitnet").eval()}
    for name in available_recipes():
        student = load_recipe(name).student
        models[f"{name} ({student})"] = timm.create_model(student).eval()

    @torch.inference_mode()
    def logits(model: torch.nn.Module, size: int) -> torch.Tensor:
        return torch.cat([model(batch) for batch in x.split(size)])

    calls = {(name, size): (lambda model=model, size=size: logits(model, size))
             for name, model in models.items() for size in sizes}
    seconds = interleaved_medians(calls, rounds=3, per_round=1)
    rows, same = [], True
    for name, model in models.items():
        per_128 = {size: seconds[name, size] / IMAGES * 128 * 1000 for size in sizes}
        rows.append([name, *(f"{per_128[size]:.1f}" for size in sizes),
                     f"{per_128[BASELINE] / per_128[EVAL_BATCH]:.2f}x"])
        reference = logits(model, BASELINE)
        same &= all(torch.equal(logits(model, size), reference) for size in sizes)
    print_table(f"Inference on {IMAGES} images, {torch.get_num_threads()} thread(s): milliseconds "
                f"per 128 images (median of 3)",
                ["network", *(f"batch {size}" for size in sizes),
                 f"batch {EVAL_BATCH} (EVAL_BATCH) against {BASELINE}"], rows)
    print(f"\nLogits identical at every batch size: {same}")


if __name__ == "__main__":
    main()
