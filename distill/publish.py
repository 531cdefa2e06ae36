"""Released models: a run's weights with a model card, under models/NAME/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from distill.errors import DistillError
from distill.report import human, percent, write_atomic

CARD_IMAGES = ("curves.png", "confusion.png", "examples.png")


def model_card(report: dict) -> str:
    ev, c, t = report["evaluation"], report["cost"], report["training"]
    metrics = [
        {"type": "accuracy", "name": "top-1 accuracy (test set)", "value": round(ev["test"]["top1"], 4)},
        {"type": "accuracy", "name": "top-2 accuracy (test set)", "value": round(ev["test"]["top2"], 4)},
        {"type": "accuracy", "name": "top-1 accuracy (augmented test set)",
         "value": round(ev["augmented_test"]["top1"], 4)},
        {"type": "accuracy", "name": "top-2 accuracy (augmented test set)",
         "value": round(ev["augmented_test"]["top2"], 4)},
    ]
    front = {"license": "mit", "library_name": "timm", "pipeline_tag": "image-classification",
             "datasets": ["ylecun/mnist"], "tags": ["distill", "mnist", report["kind"]],
             "model-index": [{"name": report["model"], "results": [{
                 "task": {"type": "image-classification"},
                 "dataset": {"type": "ylecun/mnist", "name": "MNIST", "split": "test"},
                 "metrics": metrics}]}]}
    role = {"teacher": "the DigitNet teacher (ConvNeXt-V2 blocks, stages 1-1-3-1, trained with "
                       "cross-entropy without label smoothing)",
            "student": f"a student distilled from the DigitNet teacher with recipe "
                       f"`{report.get('recipe')}`",
            "twin": f"the twin of recipe `{report.get('recipe')}`, trained on labels alone"}
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
        f"# {report['model']}", "",
        f"`{report['model']}` is {role.get(report['kind'], report['kind'])}, made with "
        "[distill](../../README.md).", "",
        "| parameters | bytes | FLOPs per image | CPU latency (batch 1) | CPU throughput (batch 512) |",
        "| --- | --- | --- | --- | --- |",
        f"| {c['parameters']:,} | {c['bytes']:,} | {human(c['flops'])} | {c['latency_ms']:.2f} ms "
        f"| {c['throughput']:,.0f} img/s |", "",
        "| MNIST | top-1 | top-2 |", "| --- | --- | --- |",
        f"| test set | {percent(ev['test']['top1'])} | {percent(ev['test']['top2'])} |",
        f"| heavily augmented test set | {percent(ev['augmented_test']['top1'])} | "
        f"{percent(ev['augmented_test']['top2'])} |", "",
    ]
    if ev.get("teacher_agreement") is not None:
        lines += [f"Agrees with the teacher on {percent(ev['teacher_agreement'])} of the test "
                  "images.", ""]
    if report.get("gain_over_twin") is not None:
        lines += [f"Distillation gained {100 * report['gain_over_twin']:+.2f} points of test top-1 "
                  "over the same network trained on labels alone.", ""]
    lines += [
        "## Use", "", "```python", "import timm", "import distill.nets  # registers the networks with timm",
        "", f'model = timm.create_model("{report["model"]}", pretrained=True).eval()', "```", "",
        f"or `distill predict models/{report['model']}/weights.safetensors digit.png`. Inputs are "
        "28x28 MNIST-style images (white digit on black), normalized with mean 0.1307 and "
        "standard deviation 0.3081.", "",
        "## Training", "",
        f"Trained with `{report['command']}`{at_commit(report)} on {t['device']}: "
        f"{t['epochs_run']} epochs in "
        f"{t['seconds']:.0f} s (best epoch {t['best_epoch'] + 1}, seed {t.get('seed')}).", "",
        "![training curves](curves.png)", "", "![confusion matrix](confusion.png)", "",
        "![test digits and predictions](examples.png)", "",
        "## License", "", "MIT. MNIST by Yann LeCun and Corinna Cortes (CC BY-SA 3.0).", "",
    ]
    return "\n".join(lines)


def at_commit(report: dict) -> str:
    """Where the run's code is: a command's defaults change from one commit to the next."""
    commit = report.get("environment", {}).get("git_commit", "unknown")
    return "" if commit == "unknown" else f" at commit {commit}"


def publish(run: Path, target: Path) -> list[Path]:
    """Copy a finished run's weights and images to `target` and write its model card."""
    report_path = run / "report.json"
    if not report_path.is_file():
        raise DistillError(f"{run} is not a finished run (no report.json). Give the folder that "
                           "`distill teacher` or `distill student` wrote.")
    report = json.loads(report_path.read_text())
    if target.name != report["model"]:
        raise DistillError(f"{run} holds a {report['model']}: publish it to models/"
                           f"{report['model']}, the folder timm's pretrained=True reads.")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("weights.safetensors", "report.json", *CARD_IMAGES):
        shutil.copyfile(run / name, target / name)
        written.append(target / name)
    write_atomic(target / "README.md", model_card(report))
    return [target / "README.md", *written]
