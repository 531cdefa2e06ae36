"""Released models: a run's weights with a model card, under models/NAME/."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml

from distill.datasets import DATASETS, folder_root
from distill.errors import DistillError
from distill.files import MODELS_DIR, atomic_path, write_atomic
from distill.nets import release_name
from distill.report import (
    augmented_with,
    human,
    load_report,
    omitted_bias_text,
    percent,
    started_from,
    transfer_lines,
)
from distill.transfer import never_seen

CARD_IMAGES = ("curves.png", "confusion.png", "examples.png")


# The datasets' names on the Hugging Face hub, for the card's front matter.
HUB_DATASETS = {"mnist": ("ylecun/mnist", "MNIST"),
                "fashion-mnist": ("zalando-datasets/fashion_mnist", "Fashion-MNIST")}


LICENSES = {"mnist": "MNIST by Yann LeCun and Corinna Cortes (CC BY-SA 3.0).",
            "fashion-mnist": "Fashion-MNIST by Zalando SE (MIT)."}


def model_card(report: dict, network_kwargs: dict | None = None, in_distill: bool = True) -> str:
    """The README of a release. `network_kwargs`: the weights file's network arguments, which a
    folder network's card needs to say how timm builds it. `in_distill`: released in distill's
    own models/ folder, whose cards link to its README and results (a user's own folder has
    neither beside it)."""
    ev, c, t = report["evaluation"], report["cost"], report["training"]
    dataset = report.get("dataset", "mnist")
    folder = dataset not in DATASETS
    shown = folder_root(dataset).name if folder else HUB_DATASETS[dataset][1]
    # A folder has no name on the hub: the card names it by its folder, and leaves it out of the
    # front matter's datasets, which link to the hub.
    hub = "imagefolder" if folder else HUB_DATASETS[dataset][0]
    name = release_name(report["model"], dataset)
    metrics = [
        {"type": "accuracy", "name": "top-1 accuracy (test set)", "value": round(ev["test"]["top1"], 4)},
        {"type": "accuracy", "name": "top-2 accuracy (test set)", "value": round(ev["test"]["top2"], 4)},
        {"type": "accuracy", "name": "top-1 accuracy (augmented test set)",
         "value": round(ev["augmented_test"]["top1"], 4)},
        {"type": "accuracy", "name": "top-2 accuracy (augmented test set)",
         "value": round(ev["augmented_test"]["top2"], 4)},
    ]
    front = {"license": "other" if folder else "mit", "library_name": "timm",
             "pipeline_tag": "image-classification",
             **({} if folder else {"datasets": [hub]}),
             "tags": ["distill", shown if folder else dataset, report["kind"]],
             "model-index": [{"name": name, "results": [{
                 "task": {"type": "image-classification"},
                 "dataset": {"type": hub, "name": shown, "split": "test"},
                 "metrics": metrics}]}]}
    teachers = len((report.get("teacher_sha256") or report.get("teacher") or "").split(", "))
    taught_by = (f"the mean of {teachers} teachers' logits (an ensemble)" if teachers > 1 else
                 "the DigitNet teacher")
    role = {"teacher": "the DigitNet teacher (ConvNeXt-V2 blocks, stages 1-1-3-1, trained with "
                       "cross-entropy without label smoothing)",
            "student": f"a student distilled from {taught_by} with recipe `{report.get('recipe')}`",
            "twin": f"the twin of recipe `{report.get('recipe')}`, trained on labels alone"}
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
        f"# {name}", "",
        f"`{name}` is {role.get(report['kind'], report['kind'])}, made with "
        + ("[distill](../../README.md)." if in_distill else "distill."), "",
        "| parameters | bytes | FLOPs per image | CPU latency (batch 1) | CPU throughput (batch 512) |",
        "| --- | --- | --- | --- | --- |",
        f"| {c['parameters']:,} | {c['bytes']:,} | {human(c['flops'])} | {c['latency_ms']:.2f} ms "
        f"| {c['throughput']:,.0f} img/s |", "",
        f"CPU speed as measured when training ended, on {t['device']}: it depends on what else "
        "was running. `distill report models` measures every release again, one after another.",
        "",
        f"| {shown} | top-1 | top-2 |", "| --- | --- | --- |",
        f"| test set | {percent(ev['test']['top1'])} | {percent(ev['test']['top2'])} |",
        f"| heavily augmented test set | {percent(ev['augmented_test']['top1'])} | "
        f"{percent(ev['augmented_test']['top2'])} |", "",
        "The heavily augmented test set augments each test image once at random, with a fixed "
        f"seed ({augmented_with(report)}).", "",
    ]
    if ev.get("teacher_agreement") is not None:
        lines += [f"Agrees with {'their mean' if teachers > 1 else 'the teacher'} on "
                  f"{percent(ev['teacher_agreement'])} of the test images.", ""]
    if report.get("gain_over_twin") is not None:
        # One seed's difference, not a claim: gains are claimed over seeds, with an interval.
        over_seeds = ("what distillation buys over seeds is in [docs/results.md]"
                      "(../../docs/results.md)" if in_distill else
                      f"`distill student --recipe {report.get('recipe')} --seeds 0-4`, then "
                      "`distill report`, measure what distillation buys over seeds")
        lines += [f"Against the same network trained on labels alone with the same seed (its "
                  f"twin): {100 * report['gain_over_twin']:+.2f} points of test top-1 on this "
                  f"seed; {over_seeds}.", ""]
    lines += [line for text in transfer_lines(report) for line in (text, "")]  # few labels
    lines += [
        "## Use", "", "```python", "import timm", "import distill  # registers the networks with timm",
        "", *(folder_snippet(report, name, network_kwargs or {}) if folder else
              [f'model = timm.create_model("{name}", pretrained=True).eval()']), "```", "",
        f"or `distill predict models/{name} image.png`{predict_fitting(dataset)}. "
        + (f"Inputs are {input_shape(report, network_kwargs or {})} images of {shown} normalized "
           "as the folder's training images were; its classes, in order: "
           f"{', '.join(report['classes'])}." if folder else
           f"Inputs are 28x28 {shown} images (light on black), normalized with mean "
           f"{DATASETS[dataset].mean[0]:.4f} and standard deviation {DATASETS[dataset].std[0]:.4f} "
           "(timm's `model.pretrained_cfg` holds them); its classes, in order: "
           f"{', '.join(report['classes'])}." if report.get("classes") and dataset != "mnist" else
           "Inputs are 28x28 MNIST-style images (white digit on black), normalized with mean "
           "0.1307 and standard deviation 0.3081."), "",
        *bias_use(report),
        "## Training", "",
        f"Trained with `{report['command']}`{at_commit(report)} on {t['device']}: "
        f"{t['epochs_run']} epochs in "
        f"{t['seconds']:.0f} s (best epoch {t['best_epoch'] + 1}, seed {t.get('seed')})."
        + started_from(report), "",
        "![training curves](curves.png)", "", "![confusion matrix](confusion.png)", "",
        f"![test {'digits' if dataset == 'mnist' else 'images'} and predictions](examples.png)", "",
        "## License", "",
        # A folder's images are the user's, under terms distill cannot know.
        (f"distill's code is MIT. These weights were learned from the images of {shown} and "
         "follow their owner's terms: name that license here and in the header (`license: "
         "other` until then)." if folder else
         "MIT. " + LICENSES.get(dataset, "")), "",
    ]
    return "\n".join(lines)


def bias_use(report: dict) -> list[str]:
    """For a network that never saw some classes: the weights are the network as trained, and
    the report's figures "after" add a bias to those classes' logits, as evaluate, predict and
    the demo do."""
    if (omitted := never_seen(report)) is None:
        return []
    adds = "; ".join(f"logits[:, {int(c)}] += {b:.4f}" for c, b in omitted["bias"].items())
    return [f"It never saw {omitted_bias_text(report, bias=False)} in training: `distill "
            "evaluate`, `predict` and the demo add to its logits the bias its report chose "
            f"without labels ({omitted_bias_text(report)}), as the figures after the bias above. "
            f"The weights are the network as trained; with timm, add the bias yourself: `{adds}`.",
            ""]


def input_shape(report: dict, network_kwargs: dict) -> str:
    size = report.get("config", {}).get("image_size", 28)
    return f"{size}x{size} {'RGB' if network_kwargs.get('in_chans', 1) == 3 else 'grayscale'}"


def folder_snippet(report: dict, name: str, network_kwargs: dict) -> list[str]:
    """How timm builds a folder's network from its weights: timm knows pretrained tags only of
    the datasets distill ships, so the file, its classes and its input shape are given by hand
    (without them in the overlay, timm would drop the trained head and adapt the first conv)."""
    kwargs = {"num_classes": network_kwargs.get("num_classes", 10),
              "in_chans": network_kwargs.get("in_chans", 1),
              "img_size": network_kwargs.get("img_size", 28)}
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    shape = (kwargs["in_chans"], kwargs["img_size"], kwargs["img_size"])
    return ["model = timm.create_model(",
            f'    "{report["model"]}", pretrained=True, {args},',
            f'    pretrained_cfg_overlay=dict(file="models/{name}/weights.safetensors",',
            f'                                num_classes={kwargs["num_classes"]}, input_size={shape}),',
            ").eval()"]


def at_commit(report: dict) -> str:
    """Where the run's code is: a command's defaults change from one commit to the next."""
    commit = report.get("environment", {}).get("git_commit", "unknown")
    return "" if commit == "unknown" else f" at commit {commit}"


RELEASE_FILES = ("README.md", "weights.safetensors", "report.json", *CARD_IMAGES)


def predict_fitting(dataset: str) -> str:
    """What `distill predict` does to a user's picture first, for the card's sentence on it (MNIST's
    card says it in its own words)."""
    framing = DATASETS[dataset].framing if dataset in DATASETS else "resize"  # else a folder
    if framing == "object":
        return (", which first fits a photo of one object as the dataset's images were made "
                "(trimmed to it, centred, light on black; a light background is inverted)")
    if framing == "resize":
        return ", which resizes a picture as the dataset's images were decoded"
    return ""


def publish(run: Path, target: Path, overwrite: bool = False,
            assets: Path | None = None) -> list[Path]:
    """Release a finished run in `target`: weights, report, images and a model card.

    Everything is checked before anything is written; the release is assembled beside `target`
    and swapped in by renames, so a reader sees the old release or the new one, never a mix.
    An existing release is replaced only with `overwrite`. `assets` also gets the run's
    examples.png and its confusion matrix as cm.png (the README's images).
    """
    from distill.export import load_model, weights_metadata

    report = load_report(run)
    if report is None:
        raise DistillError(f"{run} is not a finished run (no report.json). Give the folder that "
                           "`distill teacher` or `distill student` wrote.")
    expected = release_name(report["model"], report.get("dataset", "mnist"))
    if target.name != expected:
        where = ("" if report.get("dataset", "mnist") not in DATASETS else
                 ", the folder timm's pretrained=True reads")
        raise DistillError(f"{run} holds a {report['model']} of {report.get('dataset', 'mnist')}: "
                           f"publish it to models/{expected}{where}.")
    if missing := [name for name in RELEASE_FILES[1:] if not (run / name).is_file()]:
        raise DistillError(f"{run} lacks {', '.join(missing)}: it is not a complete run. Train it "
                           "again (or with --resume) before publishing.")
    load_model(run)  # weights that do not load are not released
    if target.exists():
        if not overwrite:
            raise DistillError(f"{target} already holds a release. Pass --overwrite to replace it "
                               f"(compare first: distill evaluate {target} {run}).")
        foreign = ([p.name for p in target.iterdir() if p.name not in RELEASE_FILES]
                   if target.is_dir() else [target.name])
        if foreign:
            raise DistillError(f"{target} holds what a release does not ({', '.join(foreign[:3])}): "
                               "distill does not replace it. Move those out first.")
    staging = target.with_name(f".{target.name}.new-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name in RELEASE_FILES[1:]:
            shutil.copyfile(run / name, staging / name)
        write_atomic(staging / "README.md",
                     model_card(report, json.loads(weights_metadata(run).get("kwargs", "{}")),
                                in_distill=target.resolve().parent == MODELS_DIR.resolve()))
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    written = [target / name for name in RELEASE_FILES]
    if assets is not None:
        assets.mkdir(parents=True, exist_ok=True)
        for source, name in (("examples.png", "examples.png"), ("confusion.png", "cm.png")):
            with atomic_path(assets / name) as tmp:
                shutil.copyfile(run / source, tmp)
            written.append(assets / name)
    return written
