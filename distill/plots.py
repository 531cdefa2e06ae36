"""The plots: a run's curves, confusion matrix and examples; across runs, accuracy against size
and against the number of labels, and each recipe's gain over its twin."""

from __future__ import annotations

import csv
import functools
import itertools
import math
import statistics
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from torch import Tensor  # noqa: E402

from distill.run_report import dataset_shown  # noqa: E402


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


def plot_curves(csv_path: Path, out: Path, kept_epoch: int | None = None,
                loss: str = "Loss", train: str = "train", start: dict | None = None) -> None:
    fig = curves_figure(read_metrics(csv_path), kept_epoch, loss, train, start)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def curves_figure(series: dict[str, list[tuple[int, float]]],
                  kept_epoch: int | None = None, loss: str = "Loss",
                  train: str = "train", start: dict | None = None) -> plt.Figure:
    """Loss and error rate per epoch, both on log axes: on MNIST the error falls from tens of
    percent to under one, and a log axis shows the first epoch and the last tenths of a point
    in one frame. `kept_epoch` (counted from 0, as in report.json) marks the epoch whose
    weights the run kept; `loss` names what was minimized (a student's distillation loss is
    not a cross-entropy, and its scale differs); `train` labels the training curves (which
    images they are of: augmented ones score lower than the clean validation images). `start`: a
    run begun from trained weights draws theirs (validation `loss` and `top1`) as a line, the
    level its validation curves had to beat."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8),
                             gridspec_kw=dict(left=0.07, right=0.99, bottom=0.13, top=0.92))
    epochs_run = max((e for points in series.values() for e, _ in points), default=0) + 1
    panels = ((axes[0], "loss", f"{loss} (log scale)", lambda v: v, 1, ""),
              (axes[1], "acc", "Error rate (log scale)", lambda v: 1 - v, 100, "%"))
    for ax, metric, title, shown, scale, unit in panels:
        for split, marker in (("train", "o"), ("val", "s")):
            if points := series.get(f"{split}_{metric}", []):
                epochs, values = zip(*points)
                # Long runs: no markers, they merge into a band.
                ax.plot([e + 1 for e in epochs], [shown(v) for v in values],
                        "-" + marker * (epochs_run <= 30), label=train if split == "train"
                        else split, markersize=4)
        if start is not None and ax.lines:
            ax.axhline(shown(start["loss" if metric == "loss" else "top1"]), color="C1",
                       linestyle="--", linewidth=1, label="val, starting weights")
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


def plot_confusion(matrix: Tensor, out: Path, title: str = "Confusion matrix (test set)",
                   classes: list[str] | None = None) -> None:
    """The test set's confusion matrix, its axes labelled by class name where given (a sneaker,
    not 7). Up to WRITTEN classes each cell holds its count; past them (a folder of 100 classes)
    the figure grows with the classes and a colour bar reads the cells."""
    named = classes is not None
    count = len(matrix)
    written = count <= WRITTEN
    if written:  # names need room at the left and below; indices do not
        fig, ax = plt.subplots(figsize=(6.4, 6.4) if named else (5.4, 5.4),
                               gridspec_kw=dict(left=0.22 if named else 0.1, right=0.98,
                                                bottom=0.2 if named else 0.1, top=0.94))
    else:
        side = min(24.0, 3.0 + 0.13 * count)  # a 6-point name a row
        fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    # Log colours: the diagonal holds ~1000 per class and the mistakes a handful.
    shown = matrix.float().clamp(min=0.5).log10()
    image = ax.imshow(shown, cmap="Blues")
    if written:
        dark = shown.min() + 0.6 * (shown.max() - shown.min())  # white text from here on
        for i in range(count):
            for j in range(count):
                if value := int(matrix[i, j]):
                    ax.text(j, i, value, ha="center", va="center", fontsize=8,
                            color="white" if shown[i, j] > dark else "black")
    else:
        bar = fig.colorbar(image, ax=ax, shrink=0.6, label="test images (log scale)")
        top = float(shown.max())
        counts = [0.5] + [m * 10**e for e in range(7) for m in (1, 2, 5) if math.log10(m * 10**e) <= top]
        bar.set_ticks([math.log10(c) for c in counts], labels=["0"] + [f"{c:,.0f}" for c in counts[1:]])
    ax.set(xticks=range(count), yticks=range(count), xlabel="predicted", ylabel="true",
           title=title)
    size = 8 if count <= 40 else 6
    ticks = [shortened(name, 24) for name in classes] if named else [str(k) for k in range(count)]
    ax.set_xticklabels(ticks, fontsize=size, **(dict(rotation=45, ha="right", rotation_mode="anchor")
                                                if named or not written else {}))
    ax.set_yticklabels(ticks, fontsize=size)
    fig.savefig(out, dpi=120)
    plt.close(fig)


WRITTEN = 20  # classes up to which a confusion matrix writes its counts


def shortened(name: str, width: int) -> str:
    """A class name in at most `width` characters, elided in the middle: names often share
    their beginning ("class 17", "class 18")."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return f"{name[:head]}…{name[len(name) - (width - 1 - head):]}"


def example_indices(predicted: Tensor, labels: Tensor, count: int, mistakes: int) -> list[int]:
    """Which test images an examples grid shows: right ones, then mistakes (at most `mistakes`),
    `count` in all, each kind taken from every true class in turn."""
    # Each class in turn, not the first images: a folder's test set is in class order, and its
    # first 24 images would all be of one class.
    def by_class(chosen: Tensor) -> list[int]:
        each = [(chosen & (labels == c)).nonzero().flatten().tolist() for c in labels.unique().tolist()]
        return [i for turn in itertools.zip_longest(*each) for i in turn if i is not None]

    wrong = by_class(predicted != labels)[:mistakes]
    return by_class(predicted == labels)[: count - len(wrong)] + wrong


def plot_examples(images: Tensor, logits: Tensor, labels: Tensor, out: Path, count: int = 32,
                  mistakes: int = 8, classes: list[str] | None = None) -> None:
    """A grid of test images (uint8, as read) with predictions, by class name where given: right
    ones taken from each class in turn, then the first mistakes, framed in red."""
    def name(index: int) -> str:
        return shortened(classes[index], 11) if classes else str(index)

    predicted = logits.argmax(-1)
    shown = example_indices(predicted, labels, count, mistakes)
    cols, pad, label = 8, 3, 10  # pixels around each digit and above it for its label
    rows = math.ceil(len(shown) / cols)
    # One image of all the digits on one axes, not an axes per digit: matplotlib spends ~0.1 s
    # on each axes, which made this plot the slowest part of a short run's report.
    images = images.unsqueeze(1) if images.dim() == 3 else images  # (N, C, H, W)
    size = images.shape[-1]
    width, height = size + 2 * pad, label + size + 2 * pad
    grid = torch.ones(rows * height, cols * width, 3)
    for k, i in enumerate(shown):
        top, left = (k // cols) * height + label, (k % cols) * width
        if predicted[i] != labels[i]:
            grid[top + 1:top + width - 1, left + 1:left + width - 1] = torch.tensor([0.85, 0.1, 0.1])
        image = images[i].float().div(255).permute(1, 2, 0)  # (H, W, C)
        # One channel: dark ink on white paper, as digits are read; colour images as they are.
        grid[top + pad:top + pad + size, left + pad:left + pad + size] = (
            1 - image if image.shape[-1] == 1 else image)
    title = 0.3  # inches
    fig = plt.figure(figsize=(cols * 1.1, rows * 1.1 * height / width + title))
    ax = fig.add_axes((0, 0, 1, 1 - title / fig.get_figheight()))
    ax.imshow(grid.numpy(), interpolation="nearest", aspect="auto")
    ax.axis("off")
    for k, i in enumerate(shown):
        ok = bool(predicted[i] == labels[i])
        ax.text((k % cols + 0.5) * width - 0.5, (k // cols) * height + label - 1.5,
                name(int(predicted[i])) if ok else
                f"{name(int(predicted[i]))}{chr(10) if classes else ' '}(true {name(int(labels[i]))})",
                ha="center", va="bottom", fontsize=9 if not classes or ok else 7,
                color="black" if ok else "red")
    fig.suptitle("Test images and predictions (mistakes framed in red)", fontsize=10, y=0.995)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_accuracy_vs_size(reports: list[dict], out: Path) -> None:
    """Test top-1 against parameters (log axis): students and twins in different marks."""
    fig, ax = plt.subplots(figsize=(7, 4.8), layout="constrained")
    marks = {"student": ("o", "tab:blue", "distilled student"),
             "twin": ("x", "tab:orange", "twin (labels only)"),
             "teacher": ("*", "tab:red", "teacher")}
    labels: list[tuple[float, float, str, str, int]] = []  # x, y, text, kind, other recipes
    for kind, (marker, colour, label) in marks.items():
        chosen = [r for r in reports if r.get("kind", "teacher") == kind]
        if not chosen:
            continue
        xs = [r["cost"]["parameters"] for r in chosen]
        ys = [100 * r["evaluation"]["test"]["top1"] for r in chosen]
        ax.scatter(xs, ys, marker=marker, color=colour, s=140 if kind == "teacher" else 60,
                   label=label, zorder=3)
        if kind == "teacher":  # the level to reach: the best teacher's, where there are several
            ax.axhline(max(ys), color=colour, linestyle=":", linewidth=1, zorder=1)
        if kind == "twin":
            continue
        # One label a network size, at its best run, naming its recipe: the runs of several
        # seeds, or of several recipes of one network, would stack their labels.
        recipes: dict[int, list[str]] = {}
        best: dict[int, float] = {}
        for r, x, y in sorted(zip(chosen, xs, ys), key=lambda point: -point[2]):
            recipes.setdefault(x, []).append(point_label(r))
            best.setdefault(x, y)
        labels += [(x, best[x], names[0], kind, len(set(names)) - 1)
                   for x, names in recipes.items()]
    # Networks of nearly the same size (convnet_8k's 7,946 and tiny's 9,042 parameters) would
    # write their labels over each other: the smaller of such a pair is labelled on its left.
    # The teacher's label goes under its star: an MLP student can be larger, and on its right.
    labels.sort()
    on_left = [False] * len(labels)
    for i, (x, _, _, kind, _) in enumerate(labels):
        close = i + 1 < len(labels) and math.log10(labels[i + 1][0] / x) < 0.3
        on_left[i] = kind != "teacher" and close and not (i and on_left[i - 1])
    for (x, y, text, kind, others), left in zip(labels, on_left):
        side, align = (-6, "right") if left else (6, "left")
        if kind == "teacher":
            side, align = 0, "center"
        ax.annotate(text, (x, y), textcoords="offset points", ha=align,
                    xytext=(side, -18 if kind == "teacher" else 5), fontsize=8)
        if others:
            ax.annotate(f"(and {others} other recipe{'s' * (others > 1)})", (x, y),
                        textcoords="offset points", ha=align, fontsize=7, color="0.4",
                        xytext=(side, -28 if kind == "teacher" else -6))
    ax.margins(x=0.12, y=0.08)  # room for the labels above the points
    save_accuracy_figure(fig, ax, out, "parameters",
                         f"Accuracy against size on {dataset_shown(reports[0])}", 3)


def point_label(report: dict) -> str:
    """A release by the name it is loaded by (`digitnet.fashion_mnist`: its recipe may be an
    experiment's file), a run by its recipe."""
    from distill.files import is_in_releases

    run = report.get("run")
    if run and is_in_releases(Path(run)):
        return Path(run).name
    return report.get("recipe") or report["name"]


def save_accuracy_figure(fig: plt.Figure, ax: plt.Axes, out: Path, x: str, title: str,
                         legend_columns: int) -> None:
    """Test top-1 against a log x axis, the legend below the axes (inside, any corner can hide
    a run's points)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))  # 1,000, not 10^3
    ax.set(xlabel=f"{x} (log scale)", ylabel="test top-1 accuracy (%)", title=title)
    ax.grid(alpha=0.3, which="both")
    fig.legend(loc="outside lower center", ncols=legend_columns, frameon=False)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def labels_curve_runs(reports: list[dict]) -> list[dict]:
    """The students and twins that a labels curve shows: runs of every class, with a labeled
    count, of networks run with at least two different numbers of labels."""
    runs = [r for r in reports if r.get("kind") in ("student", "twin") and r.get("transfer")
            and not r["transfer"]["excluded_classes"]]
    counts: dict[str, set[int]] = {}
    for r in runs:
        counts.setdefault(r["model"], set()).add(r["transfer"]["labeled_images"])
    return [r for r in runs if len(counts[r["model"]]) > 1]


def plot_labels_curve(reports: list[dict], out: Path) -> bool:
    """Test top-1 against the number of labeled images (log axis): the distilled student and its
    twin as two lines through their means, every seed's run a point. A student that saw no
    label at all is a dashed level (a log axis has no 0). False where there is no curve to draw."""
    runs = labels_curve_runs(reports)
    if not runs:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.8), layout="constrained")
    styles = {"student": ("o", "tab:blue", "distilled student"),
              "twin": ("x", "tab:orange", "twin (labels only)")}
    models = sorted({r["model"] for r in runs})
    for model in models:
        suffix = f" ({model})" if len(models) > 1 else ""
        for kind, (marker, colour, label) in styles.items():
            chosen = [r for r in runs if r["model"] == model and r["kind"] == kind]
            points = [(r["transfer"]["labeled_images"], 100 * r["evaluation"]["test"]["top1"])
                      for r in chosen]
            labeled = [(x, y) for x, y in points if x > 0]
            if labeled:
                ax.scatter(*zip(*labeled), marker=marker, color=colour, s=30, alpha=0.6,
                           zorder=3)
                xs = sorted({x for x, _ in labeled})
                means = [statistics.mean(y for x2, y in labeled if x2 == x) for x in xs]
                ax.plot(xs, means, color=colour, marker=marker, label=label + suffix, zorder=2)
            if unlabeled := [y for x, y in points if x == 0]:
                level = statistics.mean(unlabeled)
                ax.axhline(level, color=colour, linestyle="--", linewidth=1,
                           label=f"{label}, no labels ({level:.2f}%, {len(unlabeled)} "
                                 f"seed{'s' * (len(unlabeled) > 1)}){suffix}")
    teachers = [r for r in reports if r.get("kind", "teacher") == "teacher"]
    if len(teachers) == 1:  # the reference the students are distilled from
        top1 = 100 * teachers[0]["evaluation"]["test"]["top1"]
        ax.axhline(top1, color="tab:red", linestyle=":", linewidth=1,
                   label=f"teacher ({top1:.2f}%, all labels)")
    save_accuracy_figure(fig, ax, out, "labeled training images",
                         f"What the teacher is worth in labels, on "
                         f"{runs[0].get('dataset', 'mnist')}", 2)
    return True


def gains_axis_limit(extents: list[float]) -> float | None:
    """How far from zero the gains plot's axis reaches, or None to show every row whole: a row
    that reaches more than three times as far as the typical row (e.g. a method that loses 2.6
    points where the others move 0.1-0.3) would squeeze every other row against the zero line,
    so the axis ends just past the farthest ordinary row and such a row is written out at its
    edge."""
    if not extents:
        return None
    ordinary = [e for e in extents if e <= 3 * statistics.median(extents)]
    if len(ordinary) == len(extents):
        return None
    return 1.15 * max(ordinary)


def plot_gains(gains: list[dict], out: Path, dataset: str) -> None:
    """Each recipe's gain over its twin, one row a recipe: every seed's gain a dot, the mean a
    diamond with its 95% t-interval, a line at zero. A gain is claimed over seeds; this shows
    at a glance which intervals clear zero and how far the seeds scatter."""
    from distill.compare import unnamed_teacher  # here: compare imports Lightning, slow to load

    labels = [textwrap.fill(f"{row['recipe']} ({row['method']}, {len(row['seeds'])} seed"
                            f"{'s' * (len(row['seeds']) > 1)})", 56) for row in gains]
    lines = sum(label.count("\n") + 1 for label in labels)
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.24 * lines + 0.12 * len(gains)),
                           layout="constrained")
    sides = {"above": ("tab:blue", "mean, interval above zero"),
             "across": ("0.45", "mean, interval across zero"),
             "below": ("tab:red", "mean, interval below zero"),
             "one seed": ("0.75", "one seed: no interval")}
    rows = []
    for row in reversed(gains):  # the first recipe at the top
        points = [100 * g for g in row["gains"]]
        mean, interval = 100 * row["mean_gain"], row["gain_interval"]
        low, high = (mean, mean) if interval is None else (100 * interval[0], 100 * interval[1])
        side = ("one seed" if interval is None else "above" if low > 0 else "below" if high < 0
                else "across")
        rows.append((points, mean, low, high, side, max(abs(v) for v in [*points, low, high])))
    limit = gains_axis_limit([row[-1] for row in rows])
    shown = set()
    for y, (points, mean, low, high, side, extent) in enumerate(rows):
        colour, label = sides[side]
        if limit is not None and extent > limit:
            # Off the scale: written out at the edge it lies beyond, an arrow pointing further.
            edge = -limit if mean < 0 else limit
            bounds = "" if side == "one seed" else f" [{low:+.2f}, {high:+.2f}]"
            ax.annotate(f"off the scale: mean {mean:+.2f}{bounds}\nseeds "
                        + ", ".join(f"{p:+.2f}" for p in points),
                        xy=(edge, y), xytext=(0.9 * edge, y), color=colour, fontsize=7,
                        ha="left" if edge < 0 else "right", va="center", zorder=3,
                        arrowprops={"arrowstyle": "-|>", "color": colour})
            continue
        # Spread vertically in seed order, so that seeds with the same gain stay countable.
        spread = [y + 0.2 * (2 * i / (len(points) - 1) - 1) if len(points) > 1 else y
                  for i in range(len(points))]
        ax.scatter(points, spread, s=18, color="0.55", alpha=0.7, zorder=2,
                   label=None if "seed" in shown else "one seed's gain")
        shown.add("seed")
        ax.errorbar(mean, y, xerr=[[mean - low], [high - mean]], fmt="D", color=colour,
                    markersize=6, capsize=4, zorder=3, label=None if side in shown else label)
        shown.add(side)
    if limit is not None:
        ax.set_xlim(-limit, limit)
    ax.axvline(0, color="0.2", linewidth=1, zorder=1)
    ax.set_yticks(range(len(gains)), list(reversed(labels)), fontsize=8)
    ax.set_ylim(-0.7, len(gains) - 0.3)
    ax.set_xlabel("student's test top-1 minus its twin's (points)")
    teacher = unnamed_teacher(gains).removeprefix("; ")  # on lines of its own: titles are cut
    ax.set_title(f"Gain over the twin on {dataset}, with its 95% interval over seeds"
                 + ("\n" + textwrap.fill(f"({teacher})", 80, break_on_hyphens=False)
                    if teacher else ""), fontsize=10)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v + 0.0:+.2f}"))
    ax.grid(alpha=0.3, axis="x")
    fig.legend(loc="outside lower center", ncols=5, frameon=False, fontsize=8)
    fig.savefig(out, dpi=120)
    plt.close(fig)
