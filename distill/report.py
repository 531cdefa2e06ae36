"""A run's report (report.json, report.md, its plots) and the tables across runs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from distill.augment import ADDED_AUGMENT, Augment
from distill.files import shown_path, write_atomic
from distill.metrics import cpu_speed
from distill.plots import (
    plot_accuracy_vs_size,
    plot_confusion,
    plot_curves,
    plot_examples,
    plot_gains,
    plot_labels_curve,
)
from distill.run_report import RunReport, dataset_shown
from distill.transfer import excluded_text


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


def class_names(report: dict) -> list[str]:
    """A run's class names in label order (a report written before reports held them is MNIST's,
    whose digits name themselves)."""
    return list(report.get("classes") or "0123456789")


def started_from(report: dict) -> str:
    """A run given --init began from trained weights: its epochs and seconds are not all it took."""
    init = report.get("config", {}).get("init")
    if init is None:
        return ""
    return (f" It started from the trained weights of `{init}` (sha256 "
            f"{report.get('init_sha256', 'unknown')[:16]}), not from a random initialisation: "
            "the epochs and time above came on top of theirs." + against_start_text(report))


def against_start_text(report: dict) -> str:
    """What the run made of its starting weights, on the validation images."""
    if (scores := report.get("init_validation")) is None:  # a student, or a run before 2026-12-05
        return ""
    start, kept = scores["start"], scores["kept"]
    return (f" On the {scores['validation_images']:,} validation images the kept epoch scores a "
            f"loss of {kept['loss']:.4f} (top-1 {kept['top1']:.2%}), the starting weights "
            f"{start['loss']:.4f} ({start['top1']:.2%}).")


def markdown(report: RunReport) -> str:
    ev, c = report["evaluation"], report["cost"]
    classes = class_names(report)

    def name(index: int) -> str:
        return classes[index] if index < len(classes) else str(index)

    lines = [
        f"# {report['name']}: {report['model']}",
        "",
        f"Trained by `{report['command']}` on {report['training']['device']} in "
        f"{report['training']['seconds']:.0f} s ({report['training']['epochs_run']} "
        f"epoch{'s' * (report['training']['epochs_run'] != 1)}, "
        f"best epoch {report['training']['best_epoch'] + 1})." + started_from(report),
        "",
        "| | top-1 | top-2 | calibration error |",
        "| --- | --- | --- | --- |",
        *(f"| {label} | {percent(ev[key]['top1'])} | {percent(ev[key]['top2'])} | "
          f"{ev[key]['ece']:.4f} |"
          for label, key in (("test set", "test"), ("augmented test set", "augmented_test"))),
        "",
        f"Scored on {ev['test_images']:,} test images; the augmented copy augments each once at "
        f"random, with a fixed seed ({augmented_with(report)}).",
        "",
        "| parameters | bytes | FLOPs per image | CPU latency (batch 1) | CPU throughput (batch 512) |",
        "| --- | --- | --- | --- | --- |",
        f"| {c['parameters']:,} | {c['bytes']:,} | {human(c['flops'])} | {c['latency_ms']:.2f} ms | "
        f"{c['throughput']:,.0f} img/s |",
        "",
        *student_lines(report),
        *per_class_lines(ev, report.get("classes")),
        "Most confused (true -> predicted: count): "
        + (", ".join(f"{name(p['true'])} -> {name(p['predicted'])}: {p['count']}"
                     for p in ev["most_confused"]) or "none"),
        "",
        "![curves](curves.png) ![confusion matrix](confusion.png) ![examples](examples.png)",
        "",
    ]
    return "\n".join(lines)


def augmented_with(report: dict) -> str:
    """The augmentation a run's augmented test set was drawn with, in words (a report from before
    it said so: its dataset's)."""
    if said := report["evaluation"].get("augmented_with"):
        return said
    from distill.datasets import DATASETS
    from distill.datasets.folder import HEAVY_FOLDER

    dataset = DATASETS.get(report.get("dataset", "mnist"))
    return str(dataset.heavy_augment if dataset else HEAVY_FOLDER)


def per_class_lines(ev: dict, classes: list[str] | None) -> list[str]:
    """Per-class test top-1 by class name: a row of up to ten classes, else a row a class."""
    accuracies = list(ev["per_class_accuracy"].values())
    names = [n.replace("|", "\\|") for n in (  # a | in a folder's name would end its cell
        classes if classes and len(classes) == len(accuracies) else ev["per_class_accuracy"])]
    if len(names) <= 10:
        table = ["| " + " | ".join(names) + " |", "|" + " --- |" * len(names),
                 "| " + " | ".join(f"{100 * v:.1f}" for v in accuracies) + " |"]
    else:
        table = ["| class | test top-1 (%) |", "| --- | --- |",
                 *(f"| {n} | {100 * v:.1f} |" for n, v in zip(names, accuracies, strict=True))]
    return ["Per-class accuracy (test set):", "", *table, ""]


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
    lines += transfer_lines(report)
    return [*(line for pair in zip(lines, [""] * len(lines)) for line in pair)]


def transfer_text(report: dict) -> str:
    """'550 labels, no 3' for a table; 'all labels' for a run that used every label."""
    transfer = report.get("transfer")
    if not transfer:
        return "all labels"  # a run from before transfer sets
    parts = [f"{transfer['labeled_images']:,} labels" if transfer["labeled_fraction"] < 1
             else "all labels"]
    if transfer["excluded_classes"]:
        parts.append(excluded_text(transfer["excluded_classes"], class_names(report)))
    return ", ".join(parts)


def omitted_bias_text(report: dict, bias: bool = True) -> str:
    """The classes a run never saw by name, each with the bias on its logit ("3: +2.31")."""
    names = class_names(report)
    return ", ".join(f"{names[int(c)]}: {b:+.2f}" if bias else names[int(c)]
                     for c, b in report["transfer"]["omitted"]["bias"].items())


def bias_added_line(weights: Path, report: dict) -> str:
    """What predict and evaluate say of a network that never saw some classes."""
    return (f"{weights} never saw {omitted_bias_text(report, bias=False)} in training: the bias "
            f"its report chose without labels is added to the logits ({omitted_bias_text(report)}).")


def transfer_lines(report: dict) -> list[str]:
    """The transfer set, and the omitted classes before and after their bias correction."""
    if not partial(report):
        return []
    transfer, lines = report["transfer"], []
    if transfer["labeled_fraction"] < 1:
        use = ("the student learned from the teacher alone, and has no twin."
               if transfer["labeled_images"] == 0 else
               "the twin trains on these images alone." if report.get("kind") == "twin" else
               "the hard-label term uses them; the teacher's term uses every image.")
        lines.append(f"Labels: {transfer['labeled_images']:,} "
                     f"({100 * transfer['labeled_fraction']:g}% of each class, the validation "
                     f"split's likewise); {use}")
    if (omitted := transfer.get("omitted")) is not None:
        before, after = omitted["before"], omitted["after"]
        names = class_names(report)
        lines.append(f"Classes never seen in training: "
                     f"{', '.join(names[c] for c in omitted['classes'])}. "
                     f"Test top-1 on them {percent(before['omitted_top1'])}, "
                     f"{percent(after['omitted_top1'])} after a bias on their logits "
                     f"({omitted_bias_text(report)}); "
                     f"overall {percent(before['top1'])}, {percent(after['top1'])} after. The "
                     f"bias was chosen on the {omitted['chosen_on']}"
                     + (f"; with it the network agrees with the teacher on "
                        f"{percent(omitted['validation_agreement'])} of them."
                        if "validation_agreement" in omitted else "."))
    elif transfer["excluded_classes"]:
        names = class_names(report)
        lines.append(f"Classes never seen in training: "
                     f"{', '.join(names[c] for c in transfer['excluded_classes'])}.")
    return lines


def public_report(report: dict) -> RunReport:
    return {**report, "evaluation": public(report["evaluation"])}


def training_images(augment: dict | None) -> str:
    """The training curves' legend: the images they were scored on, as the run augmented them."""
    if not augment or Augment(**{**ADDED_AUGMENT, **augment}).is_identity:
        return "train"
    return "train (augmented, CutMix)" if augment.get("cutmix") else "train (augmented)"


def write_run_report(out: Path, report: dict) -> None:
    """report.json, report.md and the three plots of one run."""
    ev = report["evaluation"]
    plot_curves(out / "logs" / "metrics.csv", out / "curves.png",
                report.get("training", {}).get("best_epoch"),
                "Distillation loss" if report.get("kind") == "student" else "Cross-entropy",
                training_images(report.get("config", {}).get("augment")),
                report.get("init_validation", {}).get("start"))
    classes = report.get("classes")
    named = None if classes == list("0123456789") else classes  # digits are their own names
    plot_confusion(torch.tensor(ev["confusion_matrix"]), out / "confusion.png", classes=named)
    plot_examples(ev["_images"], ev["_logits"], ev["_labels"], out / "examples.png",
                  classes=named)
    save_report(out, public_report(report))


def save_report(out: Path, report: RunReport) -> None:
    """A run's report.json and report.md, the one place they are written."""
    write_atomic(out / "report.md", markdown(report))
    write_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")


def runs_in(folder: Path) -> list[Path]:
    """The report.json of the run folders in `folder`, and of its seeds' (`--seeds`: seedN/RUN)."""
    return sorted(folder.glob("*/report.json")) + sorted(folder.glob("seed*/*/report.json"))


def collect_reports(paths: list[Path]) -> list[RunReport]:
    """The report.json of every run among `paths` (run folders, or folders of run folders)."""
    found = []
    for path in paths:
        if (path / "report.json").is_file():
            found.append(path / "report.json")
        elif path.is_dir():
            found += runs_in(path)
            # and another dataset's, which `distill teacher --dataset` puts in runs/DATASET/
            found += [file for sub in sorted(path.iterdir()) if sub.is_dir()
                      and not sub.name.startswith((".", "seed"))
                      and not (sub / "report.json").is_file() for file in runs_in(sub)]
    unique: dict[Path, Path] = {}  # a run named twice (runs and runs/student-tiny) shown once
    for file in found:
        unique.setdefault(file.resolve(), file)
    found = list(unique.values())
    # A broken report.json (a run's is written whole, at its end) is left out, and said.
    read = [(file, read_run_report(file.parent)) for file in found]
    reports = [report for _, report in read if report]
    if broken := [file for file, report in read if report is None]:
        warnings.warn(f"{len(broken)} report.json {'files' if len(broken) > 1 else 'file'} "
                      f"cannot be read as a run's and {'are' if len(broken) > 1 else 'is'} left "
                      f"out ({broken[0]}{', ...' * (len(broken) > 1)}).", stacklevel=2)
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


def load_report(folder: Path) -> RunReport | None:
    """A finished run's report.json, the one place it is read; None where there is none or it
    is not a run's report (a run still being written, a stray file)."""
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and "evaluation" in report else None


def report_beside(weights: Path) -> RunReport | None:
    """The report of a run folder, or of the folder a weights file is in."""
    return load_report(weights if weights.is_dir() else weights.parent)


def read_run_report(folder: Path) -> RunReport | None:
    """A finished run's report with its folder as "run", for the tables across runs."""
    report = load_report(folder)
    return None if report is None else {**report, "run": str(folder)}


def missing_teachers(reports: list[dict]) -> list[dict]:
    """The reports of the teachers the students were distilled from that are not among the runs
    (a student of the released teacher names models/digitnet), so the table shows each student's
    own teacher as its reference, also beside another teacher."""
    from distill.compare import teacher_identity

    present = {Path(r["run"]).resolve() for r in reports}
    # A teacher among the runs under another name (models/digitnet, the release of runs/teacher)
    # is the same network: one row.
    present_teachers = {teacher_identity(r["run"]) for r in reports if r.get("kind") == "teacher"}
    teachers = []
    for named in dict.fromkeys(r["teacher"] for r in reports if r.get("teacher")):
        folder = Path(named) if Path(named).is_dir() else Path(named).parent
        if folder.resolve() in present or teacher_identity(str(folder)) in present_teachers:
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
    from distill.export import load_model, trained_dataset

    for report in reports:
        model, _ = load_model(Path(report["run"]))  # timed on images of the shape it was trained on
        shaped = trained_dataset(Path(report["run"]), images=False)
        report["cost"].update(cpu_speed(model, dataset=shaped))


COLUMNS = ["run", "model", "params", "bytes", "FLOPs", "latency b1", "img/s b512", "top-1",
           "top-2", "aug top-1", "aug top-2", "agree", "ECE", "gain vs twin"]


def partial(report: dict) -> bool:
    """Whether a run used fewer labels or classes than its dataset has."""
    transfer = report.get("transfer") or {}
    return transfer.get("labeled_fraction", 1) < 1 or bool(transfer.get("excluded_classes"))


def table_columns(reports: list[dict]) -> list[str]:
    """The table's columns; "transfer set" among them where a run used few labels or classes."""
    return COLUMNS[:2] + ["transfer set"] + COLUMNS[2:] if any(map(partial, reports)) else COLUMNS


def table_rows(reports: list[dict]) -> list[list[str]]:
    transfer = any(map(partial, reports))
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
        if transfer:
            rows[-1].insert(2, transfer_text(r))
    return rows


OMITTED_COLUMNS = ["run", "never seen", "bias (validation, no labels)",
                   "agrees with teacher (validation, after bias)", "test top-1 on them",
                   "after bias", "test top-1 overall", "after bias"]


def omitted_rows(reports: list[dict]) -> list[list[str]]:
    """The classes each run never saw: test top-1 on them and overall, before and after the bias."""
    rows = []
    for r in reports:
        if (omitted := (r.get("transfer") or {}).get("omitted")) is None:
            continue
        before, after = omitted["before"], omitted["after"]
        names = class_names(r)
        rows.append([r["name"], ", ".join(names[c] for c in omitted["classes"]),
                     ", ".join(f"{b:+.2f}" for b in omitted["bias"].values()),
                     percent(omitted["validation_agreement"]) if "validation_agreement" in omitted
                     else "-", percent(before["omitted_top1"]), percent(after["omitted_top1"]),
                     percent(before["top1"]), percent(after["top1"])])
    return rows


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def by_dataset(reports: list[dict]) -> dict[str, list[dict]]:
    """The runs of each dataset, MNIST first: no table compares networks across datasets, nor a
    folder's networks at different image sizes (their inputs differ)."""
    groups: dict[str, list[dict]] = {}
    for r in reports:
        groups.setdefault(dataset_shown(r), []).append(r)
    return dict(sorted(groups.items(), key=lambda item: item[0] != "mnist"))


def comparison_markdown(reports: list[dict]) -> str:
    from distill.compare import (
        GAIN_COLUMNS,
        gain_rows,
        gains_over_twins,
        repeats_line,
        unnamed_teacher,
    )

    sections = []
    for dataset, runs in by_dataset(reports).items():
        text = f"## {dataset}\n\n" + markdown_table(table_columns(runs), table_rows(runs))
        if omitted := omitted_rows(runs):
            text += ("\n### Classes never seen in training (test top-1 before and after a bias "
                     "on their logits)\n\n" + markdown_table(OMITTED_COLUMNS, omitted))
        if gains := gains_over_twins(runs):
            text += ("\n### Gain over the twin (test top-1, points; mean ± sd over seeds, 95% "
                     f"t-interval{unnamed_teacher(gains)})\n\n"
                     + markdown_table(GAIN_COLUMNS, gain_rows(gains)))
            if repeats := repeats_line(gains):
                text += f"\n{repeats}\n"
        sections.append(text)
    return "\n".join(sections)


def write_comparison(reports: list[dict], out_dir: Path) -> list[Path]:
    """comparison.md, comparison.json and gains.json, and each dataset's plots: accuracy against
    size, and where the runs have them, the gains over the twins and the labels curve. Returns
    the files written."""
    from distill.compare import gains_over_twins
    from distill.datasets import runs_subfolder

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "comparison.md", out_dir / "comparison.json", out_dir / "gains.json"]
    write_atomic(written[0], "# Teacher and students\n\n" + comparison_markdown(reports))
    write_atomic(written[1], json.dumps(reports, indent=2) + "\n")
    write_atomic(written[2], json.dumps(gains_over_twins(reports), indent=2) + "\n")
    for dataset, runs in by_dataset(reports).items():
        # MNIST's plots keep their plain names; another dataset's carry its name (a folder's),
        # and a folder at another size than 28 its size.
        name = runs[0].get("dataset", "mnist")
        suffix = "" if dataset == "mnist" else f"-{runs_subfolder(name)}" + (
            f"-{runs[0]['config']['image_size']}" if dataset != name else "")
        size, gain, labels = (out_dir / f"{name}{suffix}.png"
                              for name in ("accuracy_vs_size", "gains", "labels_curve"))
        plot_accuracy_vs_size(runs, size)
        written.append(size)
        if gains := gains_over_twins(runs):
            plot_gains(gains, gain, dataset)
            written.append(gain)
        if plot_labels_curve(runs, labels):
            written.append(labels)
    return written
