"""Training step: the project's Lightning training of a network (DigitNet unless told) against a
plain PyTorch loop on the same model, data, optimizer, schedule and batch size. Prints
Lightning's overhead in percent.

    python benchmarks/training_step.py [--steps 100] [--model convnet_tiny]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from common import median_seconds, print_table
from timm.optim import create_optimizer_v2

from distill.data import DataModule
from distill.training import Classifier, Limits, TrainConfig, make_trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model", default="digitnet", help="a timm name, e.g. convnet_tiny")
    args = parser.parse_args()
    config = TrainConfig(model=args.model, epochs=1, batch_size=args.batch_size)

    def datamodule():
        dm = DataModule(batch_size=args.batch_size, seed=0)
        dm.setup("fit")
        return dm

    def plain_loop():
        torch.manual_seed(0)
        dm = datamodule()
        module = Classifier(config.model)
        model = module.model.train()
        optimizer = create_optimizer_v2(model, "adamw", lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=args.steps,
                                                       pct_start=config.warmup,
                                                       cycle_momentum=False)
        for step, batch in enumerate(dm.train_dataloader()):
            if step == args.steps:
                break
            x, y, *_ = dm.model_input(batch, training=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        # The same end-of-epoch validation as the Lightning run: one batch.
        model.eval()
        with torch.no_grad():
            x, y, *_ = dm.model_input(next(iter(dm.val_dataloader())), training=False)
            F.cross_entropy(model(x), y)

    def lightning_run():
        L.seed_everything(0, verbose=False)
        with tempfile.TemporaryDirectory() as out:
            trainer = make_trainer(Path(out), config, Limits(train_batches=args.steps, val_batches=1),
                                   accelerator="cpu", progress=False)
            trainer.fit(Classifier(config.model), datamodule=datamodule())

    plain = median_seconds(plain_loop, repeats=3)
    lightning = median_seconds(lightning_run, repeats=3)
    images = args.steps * args.batch_size
    print_table(f"{args.model} training, {args.steps} steps of {args.batch_size} images (median of 3)",
                ["loop", "seconds", "images/s", "relative"],
                [["plain PyTorch", f"{plain:.1f}", f"{images / plain:,.0f}", "1.00"],
                 ["distill (Lightning: callbacks, logging, checkpoint)", f"{lightning:.1f}",
                  f"{images / lightning:,.0f}", f"{lightning / plain:.2f}"]])
    print(f"\nLightning's overhead: {100 * (lightning / plain - 1):+.1f}%")


if __name__ == "__main__":
    main()
