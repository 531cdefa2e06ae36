"""What a teacher's soft targets carry besides the label, on the validation images (never the
test set): at the distillation temperature, the mean entropy of its softened outputs, the mean
mass it puts off the labeled class, and the share of that mass on its second guess. A teacher
whose softened outputs are nearly one-hot leaves a student little more than the labels. For
docs/results.md, Fashion-MNIST; no run is chosen by it.

    python docs/experiments/soft_targets.py models/digitnet.fashion_mnist \
        runs/fashion-mnist/teacher-150-release
    python docs/experiments/soft_targets.py runs/fashion-mnist/teacher-150-release \
        runs/fashion-mnist/teacher-droppath-release --ensemble --temperature 4
"""

import argparse
from pathlib import Path

from distill.data import scored_split
from distill.datasets import get_dataset
from distill.export import load_model
from distill.metrics import predict_logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path, nargs="+", help="Fashion-MNIST teachers (runs or releases).")
    parser.add_argument("--temperature", type=float, default=2.0,
                        help="The distillation temperature (tiny-fashion-mnist's: 2).")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="Fashion-MNIST's files (default: as `distill` finds them).")
    parser.add_argument("--ensemble", action="store_true",
                        help="Also the mean of the teachers' logits, as several --teacher distill.")
    args = parser.parse_args()
    dataset = get_dataset("fashion-mnist")
    images, labels = scored_split("validation", args.data_dir, dataset)
    t = args.temperature
    print(f"| teacher | validation top-1 | entropy at T {t:g} (nats) | mass off the label at T {t:g} "
          "| of it on the second guess | mass off the label at T 1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    outputs = {str(path): predict_logits(load_model(path)[0], images, dataset=dataset).float()
               for path in args.weights}
    if args.ensemble:
        outputs[f"mean of the {len(outputs)} above"] = sum(outputs.values()) / len(outputs)
    for path, logits in outputs.items():
        soft = (logits / t).softmax(1)
        entropy = -(soft * soft.clamp_min(1e-12).log()).sum(1).mean().item()
        off = 1 - soft.gather(1, labels[:, None]).squeeze(1)
        second = soft.scatter(1, labels[:, None], 0).max(1).values
        share = (second.sum() / off.sum()).item()
        plain_off = (1 - logits.softmax(1).gather(1, labels[:, None])).mean().item()
        top1 = (logits.argmax(1) == labels).float().mean().item()
        print(f"| {path} | {100 * top1:.2f}% | {entropy:.3f} | {off.mean().item():.4f} | "
              f"{100 * share:.1f}% | {plain_off:.4f} |")


if __name__ == "__main__":
    main()
