"""Training step: the project's Lightning training of a network (DigitNet unless told) against a
plain PyTorch loop on the same model, data, optimizer, schedule and batch size, and against the
same Lightning training with `self.log` at every step (as before the losses were summed on the
device and logged once an epoch). Prints Lightning's overhead in percent.

    python benchmarks/training_step.py [--steps 100] [--model convnet_tiny] [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from common import interleaved_medians, print_table
from timm.optim import create_optimizer_v2

from distill.data import DataModule
from distill.training import Classifier, Limits, TrainConfig, make_trainer


class LoggedEveryStep(Classifier):
    """The training step as it was until the losses were summed on the device: two calls of
    Lightning's self.log a step (a distillation step made four)."""

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        y = batch[1]
        logits, terms = self.losses(batch, batch_idx)
        loss = sum(terms.values())
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(y), sync_dist=True)
        self.train_acc(logits, y)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(y))
        return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model", default="digitnet", help="a timm name, e.g. convnet_tiny")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each, interleaved")
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

    def lightning_run(module: type[Classifier]):
        def run():
            L.seed_everything(0, verbose=False)
            with tempfile.TemporaryDirectory() as out:
                trainer = make_trainer(Path(out), config, Limits(train_batches=args.steps,
                                                                 val_batches=1),
                                       accelerator="cpu", progress=False)
                trainer.fit(module(config.model), datamodule=datamodule())
        return run

    seconds = interleaved_medians({"plain": plain_loop, "distill": lightning_run(Classifier),
                                   "every step": lightning_run(LoggedEveryStep)},
                                  rounds=args.rounds, per_round=1)
    plain, lightning = seconds["plain"], seconds["distill"]
    images = args.steps * args.batch_size
    rows = [["plain PyTorch", plain],
            ["distill (Lightning: callbacks, logging once an epoch, checkpoint)", lightning],
            ["the same, self.log at every step (before)", seconds["every step"]]]
    print_table(f"{args.model} training, {args.steps} steps of {args.batch_size} images (median of "
                f"{args.rounds}, interleaved)", ["loop", "seconds", "images/s", "relative"],
                [[name, f"{t:.2f}", f"{images / t:,.0f}", f"{t / plain:.3f}"] for name, t in rows])
    print(f"\nLightning's overhead: {100 * (lightning / plain - 1):+.1f}% (with self.log at every "
          f"step: {100 * (seconds['every step'] / plain - 1):+.1f}%)")


if __name__ == "__main__":
    main()
