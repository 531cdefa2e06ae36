"""What a trained network achieved and what it costs: metrics, tables and plots of one run."""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from torchmetrics.classification import (  # noqa: E402
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
)

from distill.data import (  # noqa: E402
    EVAL_BATCH,
    HEAVY_AUGMENT,
    HEAVY_AUGMENT_SEED,
    IMAGE_SIZE,
    NUM_CLASSES,
    load_split,
    prepare,
)
from distill.files import write_atomic  # noqa: E402
from distill.nets import parameter_count  # noqa: E402


@torch.inference_mode()
def predict_logits(model: nn.Module, images: Tensor, augmented: bool = False,
                   device: torch.device | str = "cpu") -> Tensor:
    """Logits for uint8 test images, clean or in their fixed heavily augmented version."""
    model.eval().to(device)
    out = []
    for start in range(0, len(images), EVAL_BATCH):
        batch = images[start: start + EVAL_BATCH].to(device)
        positions = torch.arange(start, start + len(batch), device=device)
        x = prepare(batch, positions, HEAVY_AUGMENT if augmented else None, seed=HEAVY_AUGMENT_SEED)
        out.append(model(x).float().cpu())
    return torch.cat(out)


def accuracy_figures(logits: Tensor, labels: Tensor) -> dict[str, float]:
    top = {k: MulticlassAccuracy(NUM_CLASSES, top_k=k, average="micro")(logits, labels).item()
           for k in (1, 2)}
    ece = MulticlassCalibrationError(NUM_CLASSES, n_bins=15)(logits.softmax(-1), labels).item()
    return {"top1": top[1], "top2": top[2], "ece": ece}


def confusion(logits: Tensor, labels: Tensor) -> Tensor:
    return MulticlassConfusionMatrix(NUM_CLASSES)(logits, labels)


def most_confused(matrix: Tensor, count: int = 5) -> list[dict[str, int]]:
    off = matrix.clone()
    off.fill_diagonal_(0)
    values, flat = off.flatten().topk(count)
    return [{"true": int(i) // NUM_CLASSES, "predicted": int(i) % NUM_CLASSES, "count": int(v)}
            for v, i in zip(values, flat) if v > 0]


def flops_per_image(model: nn.Module) -> int:
    model = model.eval().cpu()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE))
    return counter.get_total_flops()


@torch.inference_mode()
def cpu_speed(model: nn.Module, repeats: int = 5) -> dict[str, float]:
    """Median latency at batch 1 (ms) and throughput at batch 512 (images/s), on the CPU."""
    model = model.eval().cpu()

    def median_seconds(batch: Tensor, calls: int) -> float:
        model(batch)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(calls):
                model(batch)
            times.append((time.perf_counter() - started) / calls)
        return statistics.median(times)

    latency = median_seconds(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE), calls=20)
    throughput = 512 / median_seconds(torch.zeros(512, 1, IMAGE_SIZE, IMAGE_SIZE), calls=1)
    return {"latency_ms": latency * 1000, "throughput": throughput}


def evaluate(model: nn.Module, data_dir: Path | str | None = None, test_size: int | None = None,
             device: torch.device | str = "cpu") -> dict[str, Any]:
    """Accuracy on the test set and on its heavily augmented copy, and the per-class picture."""
    images, labels = load_split("test", data_dir)
    images, labels = images[:test_size], labels[:test_size]
    clean = predict_logits(model, images, device=device)
    heavy = predict_logits(model, images, augmented=True, device=device)
    matrix = confusion(clean, labels)
    per_class = (matrix.diag() / matrix.sum(1).clamp(min=1)).tolist()
    return {
        "test": accuracy_figures(clean, labels),
        "augmented_test": accuracy_figures(heavy, labels),
        "test_images": len(labels),
        "per_class_accuracy": {str(c): acc for c, acc in enumerate(per_class)},
        "most_confused": most_confused(matrix),
        "confusion_matrix": matrix.tolist(),
        "_logits": clean,
        "_labels": labels,
        "_images": images,
    }


def agreement(logits: Tensor, predictions: Tensor) -> float:
    """How often the classes these logits pick are the given predictions (a teacher's)."""
    return (logits.argmax(-1) == predictions).float().mean().item()


def scorecard(model: nn.Module, data_dir: Path | str | None = None, test_size: int | None = None,
              teacher_predictions: Tensor | None = None) -> dict[str, Any]:
    """What `distill evaluate` says of a trained network: size, accuracy on the clean and the
    heavily augmented test set, calibration, the classes it confuses, agreement with a teacher."""
    ev = evaluate(model, data_dir, test_size)
    card = {"parameters": parameter_count(model),
            "flops": flops_per_image(model), "test_images": ev["test_images"], "test": ev["test"],
            "augmented_test": ev["augmented_test"], "most_confused": ev["most_confused"]}
    if teacher_predictions is not None:
        card["teacher_agreement"] = agreement(ev["_logits"], teacher_predictions)
    return card


def cost(model: nn.Module, weights: Path) -> dict[str, Any]:
    return {"parameters": parameter_count(model),
            "bytes": weights.stat().st_size, "flops": flops_per_image(model), **cpu_speed(model)}


def public(report: dict) -> dict:
    """The report without the private tensors kept for plotting."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def markdown(report: dict) -> str:
    ev, c = report["evaluation"], report["cost"]
    lines = [
        f"# {report['name']}: {report['model']}",
        "",
        f"Trained by `{report['command']}` on {report['training']['device']} in "
        f"{report['training']['seconds']:.0f} s ({report['training']['epochs_run']} epochs, "
        f"best epoch {report['training']['best_epoch'] + 1}).",
        "",
        "| | top-1 | top-2 | calibration error |",
        "| --- | --- | --- | --- |",
        *(f"| {label} | {percent(ev[key]['top1'])} | {percent(ev[key]['top2'])} | "
          f"{ev[key]['ece']:.4f} |"
          for label, key in (("test set", "test"), ("augmented test set", "augmented_test"))),
        "",
        f"Scored on {ev['test_images']} test images; the augmented copy rotates, shifts and zooms "
        "each image (up to 30 degrees, 20%, 20%) with a fixed seed.",
        "",
        "| parameters | bytes | FLOPs per image | CPU latency (batch 1) | CPU throughput (batch 512) |",
        "| --- | --- | --- | --- | --- |",
        f"| {c['parameters']:,} | {c['bytes']:,} | {human(c['flops'])} | {c['latency_ms']:.2f} ms | "
        f"{c['throughput']:,.0f} img/s |",
        "",
        *student_lines(report),
        "Per-class accuracy (test set):",
        "",
        "| " + " | ".join(ev["per_class_accuracy"]) + " |",
        "|" + " --- |" * NUM_CLASSES,
        "| " + " | ".join(f"{100 * v:.1f}" for v in ev["per_class_accuracy"].values()) + " |",
        "",
        "Most confused (true -> predicted: count): "
        + (", ".join(f"{p['true']} -> {p['predicted']}: {p['count']}" for p in ev["most_confused"])
           or "none"),
        "",
        "![curves](curves.png) ![confusion matrix](confusion.png) ![examples](examples.png)",
        "",
    ]
    return "\n".join(lines)


def method_text(distillation: dict) -> str:
    """'dkd (temperature 4, alpha 1, ...)'; a report from before the methods has kd's keys only."""
    settings = ", ".join(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
                         for key, value in distillation.items() if key != "method")
    return f"{distillation.get('method', 'kd')} ({settings})"


def student_lines(report: dict) -> list[str]:
    """What a student report adds: how it was distilled, agreement, gain over its twin."""
    lines = []
    if report.get("distillation"):
        lines.append(f"Distilled from `{report.get('teacher')}` with "
                     f"{method_text(report['distillation'])} (recipe `{report.get('recipe')}`).")
    elif report.get("kind") == "twin":
        lines.append(f"The twin of recipe `{report.get('recipe')}`: same network, seed and data "
                     "order, trained on the labels alone.")
    agreement = report["evaluation"].get("teacher_agreement")
    if agreement is not None:
        lines.append(f"Agrees with the teacher on {percent(agreement)} of the test images.")
    if report.get("gain_over_twin") is not None:
        lines.append(f"Gain over its twin (test top-1): {100 * report['gain_over_twin']:+.2f} points.")
    return [*(line for pair in zip(lines, [""] * len(lines)) for line in pair)]


def read_metrics(csv_path: Path) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch series from Lightning's CSV log: name -> [(epoch, value)]."""
    series: dict[str, list[tuple[int, float]]] = {}
    if not csv_path.is_file():
        return series
    with csv_path.open() as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):  # the learning-rate monitor's rows carry a step only
                continue
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in ("", None):
                    series.setdefault(key, []).append((int(row["epoch"]), float(value)))
    return series


def plain_tick(value: float, _position: int, scale: float = 1, unit: str = "",
               every: bool = False) -> str:
    """A label at 1, 2, 3 and 5 times a power of ten, none elsewhere (unless `every`):
    matplotlib's default minor labels ("5x10^-2") outgrow the margin, and one at every tick
    overlap when the axis spans decades."""
    leading = round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0
    return f"{value * scale:g}{unit}" if every or leading in (1, 2, 3, 5) else ""


def plot_curves(csv_path: Path, out: Path, kept_epoch: int | None = None) -> None:
    fig = curves_figure(read_metrics(csv_path), kept_epoch)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def curves_figure(series: dict[str, list[tuple[int, float]]],
                  kept_epoch: int | None = None) -> plt.Figure:
    """Loss and error rate per epoch, both on log axes: on MNIST the error falls from tens of
    percent to under one, and a log axis shows the first epoch and the last tenths of a point
    in one frame. `kept_epoch` (counted from 0, as in report.json) marks the epoch whose
    weights the run kept."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8),
                             gridspec_kw=dict(left=0.07, right=0.99, bottom=0.13, top=0.92))
    epochs_run = max((e for points in series.values() for e, _ in points), default=0) + 1
    panels = ((axes[0], "loss", "Loss (log scale)", lambda v: v, 1, ""),
              (axes[1], "acc", "Error rate (log scale)", lambda v: 1 - v, 100, "%"))
    for ax, metric, title, shown, scale, unit in panels:
        for split, marker in (("train", "o"), ("val", "s")):
            if points := series.get(f"{split}_{metric}", []):
                epochs, values = zip(*points)
                # Long runs: no markers, they merge into a band.
                ax.plot([e + 1 for e in epochs], [shown(v) for v in values],
                        "-" + marker * (epochs_run <= 30), label=split, markersize=4)
        if kept_epoch is not None and ax.lines:
            ax.axvline(kept_epoch + 1, color="0.4", linestyle=":", linewidth=1.2,
                       label=f"kept: epoch {kept_epoch + 1}")
        # A perfect epoch (error 0) has no place on a log axis: it is left out, not drawn at a
        # made-up floor.
        ax.set_yscale("log", nonpositive="mask")
        low, high = ax.get_ylim()
        # Within a factor of 4 (a short trial, an error rate from 60% to 40%), the 1-2-3-5 labels
        # would leave one label or none: then every tick is labelled.
        tick = functools.partial(plain_tick, scale=scale, unit=unit, every=high < 4 * low)
        ax.yaxis.set_major_formatter(FuncFormatter(tick))
        ax.yaxis.set_minor_formatter(FuncFormatter(tick))
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
        if epochs_run <= 2:  # else the locator labels fractions of an epoch around the points
            ax.set_xticks(range(1, epochs_run + 1))
            ax.set_xlim(0.5, epochs_run + 0.5)
    return fig


def plot_confusion(matrix: Tensor, out: Path, title: str = "Confusion matrix (test set)") -> None:
    fig, ax = plt.subplots(figsize=(5.4, 5.4), gridspec_kw=dict(left=0.1, right=0.98, bottom=0.1,
                                                              top=0.94))
    # Log colours: the diagonal holds ~1000 per class and the mistakes a handful.
    shown = matrix.float().clamp(min=0.5).log10()
    ax.imshow(shown, cmap="Blues")
    dark = shown.min() + 0.6 * (shown.max() - shown.min())  # white text from here on, to stay legible
    for i in range(NUM_CLASSES):
        for j in range(NUM_CLASSES):
            value = int(matrix[i, j])
            if value:
                ax.text(j, i, value, ha="center", va="center", fontsize=8,
                        color="white" if shown[i, j] > dark else "black")
    ax.set(xticks=range(NUM_CLASSES), yticks=range(NUM_CLASSES), xlabel="predicted",
           ylabel="true", title=title)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_examples(images: Tensor, logits: Tensor, labels: Tensor, out: Path, count: int = 32,
                  mistakes: int = 8) -> None:
    """A grid of test digits (uint8, as read) with predictions: the first ones, then mistakes,
    framed in red."""
    predicted = logits.argmax(-1)
    wrong = (predicted != labels).nonzero().flatten()[:mistakes].tolist()
    right = (predicted == labels).nonzero().flatten()[: count - len(wrong)].tolist()
    shown = right + wrong
    cols, pad, label = 8, 3, 10  # pixels around each digit and above it for its label
    rows = math.ceil(len(shown) / cols)
    # One image of all the digits on one axes, not an axes per digit: matplotlib spends ~0.1 s
    # on each axes, which made this plot the slowest part of a short run's report.
    width, height = IMAGE_SIZE + 2 * pad, label + IMAGE_SIZE + 2 * pad
    grid = torch.ones(rows * height, cols * width, 3)
    for k, i in enumerate(shown):
        top, left = (k // cols) * height + label, (k % cols) * width
        if predicted[i] != labels[i]:
            grid[top + 1:top + width - 1, left + 1:left + width - 1] = torch.tensor([0.85, 0.1, 0.1])
        grid[top + pad:top + pad + IMAGE_SIZE, left + pad:left + pad + IMAGE_SIZE] = \
            (1 - images[i].float() / 255).unsqueeze(-1)  # dark ink on white paper
    title = 0.3  # inches
    fig = plt.figure(figsize=(cols * 1.1, rows * 1.1 * height / width + title))
    ax = fig.add_axes((0, 0, 1, 1 - title / fig.get_figheight()))
    ax.imshow(grid.numpy(), interpolation="nearest", aspect="auto")
    ax.axis("off")
    for k, i in enumerate(shown):
        ok = bool(predicted[i] == labels[i])
        ax.text((k % cols + 0.5) * width - 0.5, (k // cols) * height + label - 1.5,
                f"{int(predicted[i])}" if ok else f"{int(predicted[i])} (true {int(labels[i])})",
                ha="center", va="bottom", fontsize=9, color="black" if ok else "red")
    fig.suptitle("Test digits and predictions (mistakes framed in red)", fontsize=10, y=0.995)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def public_report(report: dict) -> dict:
    return {**report, "evaluation": public(report["evaluation"])}


def write_run_report(out: Path, report: dict) -> None:
    """report.json, report.md and the three plots of one run."""
    ev = report["evaluation"]
    plot_curves(out / "logs" / "metrics.csv", out / "curves.png",
                report.get("training", {}).get("best_epoch"))
    plot_confusion(torch.tensor(ev["confusion_matrix"]), out / "confusion.png")
    plot_examples(ev["_images"], ev["_logits"], ev["_labels"], out / "examples.png")
    clean = public_report(report)
    write_atomic(out / "report.md", markdown(clean))
    write_atomic(out / "report.json", json.dumps(clean, indent=2) + "\n")


def collect_reports(paths: list[Path]) -> list[dict]:
    """The report.json of every run among `paths` (run folders, or folders of run folders)."""
    found = []
    for path in paths:
        if (path / "report.json").is_file():
            found.append(path / "report.json")
        elif path.is_dir():  # run folders, and run folders of seeds (`--seeds`: seedN/RUN)
            found += sorted(path.glob("*/report.json")) + sorted(path.glob("seed*/*/report.json"))
    unique: dict[Path, Path] = {}  # a run named twice (runs and runs/student-tiny) shown once
    for file in found:
        unique.setdefault(file.resolve(), file)
    found = list(unique.values())
    # A run still being written or broken is left out: the table shows the rest.
    reports = [report for file in found if (report := read_run_report(file.parent))]
    reports += missing_teachers(reports)
    # Runs of several seeds share names (runs/student-tiny, runs/seed1/student-tiny): the table
    # names those by their folders instead.
    names = [r["name"] for r in reports]
    for report in reports:
        if names.count(report["name"]) > 1:
            report["name"] = shown_path(Path(report["run"]))
    order = {"teacher": 0, "student": 1, "twin": 2}
    return sorted(reports, key=lambda r: (order.get(r.get("kind", "teacher"), 0) > 0,
                                          -r["cost"]["parameters"], order.get(r.get("kind"), 0)))


def read_run_report(folder: Path) -> dict | None:
    """A finished run's report.json with its folder as "run", or None where there is none."""
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(report, dict) or "evaluation" not in report:
        return None
    return {**report, "run": str(folder)}


def shown_path(folder: Path) -> str:
    folder = folder.resolve()
    return os.path.relpath(folder) if folder.is_relative_to(Path.cwd()) else str(folder)


def missing_teachers(reports: list[dict]) -> list[dict]:
    """The reports of the teachers the students were distilled from that are not among the runs
    (a student of the released teacher names models/digitnet), so the table shows each student's
    own teacher as its reference, also beside another teacher."""
    from distill.compare import teacher_identity

    present = {Path(r["run"]).resolve() for r in reports}
    teachers = []
    for named in dict.fromkeys(r["teacher"] for r in reports if r.get("teacher")):
        folder = Path(named) if Path(named).is_dir() else Path(named).parent
        if folder.resolve() in present:
            continue
        report = read_run_report(folder)
        digests = {r.get("teacher_sha256") for r in reports if r.get("teacher") == named}
        if None not in digests and teacher_identity(str(folder)) not in digests:
            continue  # the folder now holds another teacher than the one the students had
        if report and report.get("kind") == "teacher":
            report["name"] = f"teacher ({shown_path(folder)})"
            teachers.append(report)
            present.add(folder.resolve())
    return teachers


def remeasure_speed(reports: list[dict]) -> None:
    """CPU latency and throughput of every run again, now and one after another, so the table
    compares them under the same conditions (a run's own figures depend on what else was
    running when it finished)."""
    from distill.export import load_model

    for report in reports:
        model, _ = load_model(Path(report["run"]))
        report["cost"].update(cpu_speed(model))


COLUMNS = ["run", "model", "params", "bytes", "FLOPs", "latency b1", "img/s b512", "top-1",
           "top-2", "aug top-1", "aug top-2", "agree", "ECE", "gain vs twin"]


def table_rows(reports: list[dict]) -> list[list[str]]:
    rows = []
    for r in reports:
        ev, c = r["evaluation"], r["cost"]
        agree = ev.get("teacher_agreement")
        gain = r.get("gain_over_twin")
        rows.append([r["name"], r["model"], f"{c['parameters']:,}", human(c["bytes"]) + "B",
                     human(c["flops"]), f"{c['latency_ms']:.2f} ms", f"{c['throughput']:,.0f}",
                     percent(ev["test"]["top1"]), percent(ev["test"]["top2"]),
                     percent(ev["augmented_test"]["top1"]), percent(ev["augmented_test"]["top2"]),
                     percent(agree) if agree is not None else "-", f"{ev['test']['ece']:.4f}",
                     f"{100 * gain:+.2f}" if gain is not None else "-"])
    return rows


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def comparison_markdown(reports: list[dict]) -> str:
    from distill.compare import GAIN_COLUMNS, gain_rows, gains_over_twins

    text = markdown_table(COLUMNS, table_rows(reports))
    if gains := gains_over_twins(reports):
        text += ("\n## Gain over the twin (test top-1, points; mean ± sd over seeds, 95% "
                 "t-interval)\n\n"
                 + markdown_table(GAIN_COLUMNS, gain_rows(gains)))
    return text


def plot_accuracy_vs_size(reports: list[dict], out: Path) -> None:
    """Test top-1 against parameters (log axis): students and twins in different marks."""
    fig, ax = plt.subplots(figsize=(7, 4.8), layout="constrained")
    marks = {"student": ("o", "tab:blue", "distilled student"),
             "twin": ("x", "tab:orange", "twin (labels only)"),
             "teacher": ("*", "tab:red", "teacher")}
    for kind, (marker, colour, label) in marks.items():
        chosen = [r for r in reports if r.get("kind", "teacher") == kind]
        if not chosen:
            continue
        xs = [r["cost"]["parameters"] for r in chosen]
        ys = [100 * r["evaluation"]["test"]["top1"] for r in chosen]
        ax.scatter(xs, ys, marker=marker, color=colour, s=140 if kind == "teacher" else 60,
                   label=label, zorder=3)
        if kind == "teacher":
            ax.axhline(ys[0], color=colour, linestyle=":", linewidth=1, zorder=1)
        if kind == "twin":
            continue
        # One label a recipe, at its best run: the runs of several seeds would stack their labels.
        labelled = set()
        for r, x, y in sorted(zip(chosen, xs, ys), key=lambda point: -point[2]):
            label = r.get("recipe") or r["name"]
            if label not in labelled:
                labelled.add(label)
                ax.annotate(label, (x, y), textcoords="offset points",
                            xytext=(6, -10 if kind == "teacher" else 5), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.08)  # room for the labels above the points
    ax.set(xlabel="parameters (log scale)", ylabel="test top-1 accuracy (%)",
           title="Accuracy against size on MNIST")
    ax.grid(alpha=0.3, which="both")
    # Below the axes: inside, any corner can hide a run's points.
    fig.legend(loc="outside lower center", ncols=3, frameon=False)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def write_comparison(reports: list[dict], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "comparison.md", "json": out_dir / "comparison.json",
             "gains": out_dir / "gains.json", "plot": out_dir / "accuracy_vs_size.png"}
    write_atomic(paths["markdown"], "# Teacher and students\n\n" + comparison_markdown(reports))
    write_atomic(paths["json"], json.dumps(reports, indent=2) + "\n")
    from distill.compare import gains_over_twins

    write_atomic(paths["gains"], json.dumps(gains_over_twins(reports), indent=2) + "\n")
    plot_accuracy_vs_size(reports, paths["plot"])
    return paths
