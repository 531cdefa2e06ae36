"""Write a folder of JPEG photos from the Fashion-MNIST files, for the folder walkthrough in
docs/results.md ("A folder of your own images"): the four upper-body garments, which Fashion-MNIST's
networks confuse most, as RGB JPEGs of 40x40 in one subfolder per class, as a user's own
photos would come.

    python docs/experiments/write_folder.py --out /tmp/garments --per-class 300
"""

import argparse
from pathlib import Path

from PIL import Image

from distill.datasets import get_dataset

CLASSES = {0: "tshirt", 2: "pullover", 4: "coat", 6: "shirt"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="The folder to write (new).")
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="Fashion-MNIST's files (default: as `distill` finds them).")
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists: give a new folder.")
    images, labels = get_dataset("fashion-mnist").load("train", args.data_dir)
    for label, name in CLASSES.items():
        folder = args.out / name
        folder.mkdir(parents=True)
        # The first images of each class in the training file: the same folder on every machine.
        for k, i in enumerate((labels == label).nonzero().flatten()[: args.per_class].tolist()):
            picture = Image.fromarray(images[i].numpy()).convert("RGB").resize((40, 40))
            picture.save(folder / f"{k:04d}.jpg", quality=90)
    print(f"Wrote {len(CLASSES) * args.per_class:,} JPEGs in {args.out}")


if __name__ == "__main__":
    main()
