"""Across runs: each recipe's gain over its twin, seed by seed, with its 95% interval.

On MNIST one seed's gain is within the spread between seeds (about 0.1 point), so a gain is
claimed over seeds: the mean paired difference (student minus its own twin, same seed) and its
t-interval.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import math
import statistics
from pathlib import Path
from typing import Any

from distill.training import normalized


def flat_settings(report: dict) -> dict[str, Any]:
    """A run's training and distillation settings but the seed, nested keys joined by dots."""
    flat: dict[str, Any] = {}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for name, inner in value.items():
                add(f"{prefix}.{name}" if prefix else name, inner)
        else:
            flat[prefix] = value

    add("", {**{k: v for k, v in report["config"].items() if k != "seed"},
             **(report.get("distillation") or {})})
    return flat


def teacher_identity(named: str) -> str:
    """The same teacher under any name (a relative or an absolute path, a copied run folder): the
    digest of its weights file; the name itself where the file cannot be read. An ensemble (its
    paths joined by ", "): its members' digests, joined the same way."""
    if ", " in named:
        return ", ".join(teacher_identity(part) for part in named.split(", "))
    path = Path(named)
    weights = path / "weights.safetensors" if path.is_dir() else path
    try:
        stat = weights.stat()
        return file_digest(weights.resolve(), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return named


@functools.cache
def file_digest(path: Path, mtime_ns: int, size: int) -> str:
    """sha256 of a file, read once per version of it (a report names one teacher many times)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def teacher_name(identity: str, names: list[str]) -> str:
    """A teacher shown by the first name that still holds it, else as an earlier one of the first
    name it was given (the folder holds another teacher now)."""
    for named in dict.fromkeys(names):
        if teacher_identity(named) == identity:
            return shown_teachers(named)
    return f"an earlier {shown_teachers(names[0])}"


def shown_teachers(named: str) -> str:
    """Each teacher's path (an ensemble's are joined by ", ") as the user would type it here:
    runs record absolute paths, which crowd the recipe column. A release's weights file (the
    teacher a student falls back to) is shown as its folder, the name `--teacher` takes."""
    from distill.files import shown_path

    paths = [Path(part) for part in named.split(", ")]
    return ", ".join(shown_path(path.parent if path.name == "weights.safetensors" else path)
                     for path in paths)


def gains_over_twins(reports: list[dict]) -> list[dict]:
    """Each recipe's gain over its twin on every seed it was run with, the runs grouped by recipe,
    teacher and settings. On MNIST one seed's gain is within the spread between seeds (about 0.1
    point), so it takes several seeds to tell what distillation buys."""
    groups: dict[tuple, list[dict]] = {}
    names_given: dict[str, list[str]] = {}
    for r in reports:
        if r.get("kind") != "student" or r.get("gain_over_twin") is None:
            continue
        settings = {key: value for key, value in normalized(r["config"]).items() if key != "seed"}
        teacher = r.get("teacher")
        # The digest the run recorded of the teacher it had: the folder it names may hold another
        # one since (a release replaced). Runs from before the digest was recorded: the folder's.
        identity = r.get("teacher_sha256") or (teacher_identity(teacher) if teacher else None)
        if teacher:
            names_given.setdefault(identity, []).append(teacher)
        key = (r.get("recipe") or r["name"], identity,
               json.dumps([{"method": "kd", **r["distillation"]}, settings], sort_keys=True))
        groups.setdefault(key, []).append(r)
    teacher_names = {identity: teacher_name(identity, names)
                     for identity, names in names_given.items()}
    # Where the runs have several teachers, a row names its teacher unless it is the one most
    # rows share, which the titles name instead (unnamed_teacher): "runs/teacher" on every row
    # of a table that has one ensemble row is noise.
    counts = collections.Counter(key[1] for key in groups)
    usual = max(counts, key=counts.get) if counts else None
    labels = {key: key[0] if key[1] == usual else f"{key[0]} (teacher {teacher_names.get(key[1])})"
              for key in groups}
    for label in set(labels.values()):
        same_label = [key for key in groups if labels[key] == label]
        if len(same_label) > 1:  # one recipe run with other settings: name what differs
            settings = {key: flat_settings(groups[key][0]) for key in same_label}
            differ = sorted({name for flat in settings.values() for name in flat
                             if len({repr(other.get(name)) for other in settings.values()}) > 1})
            for key in same_label:
                shown = ", ".join(f"{name} {settings[key].get(name, '-')}" for name in differ)
                labels[key] = f"{label} ({shown})"
    rows = []
    for key, runs in groups.items():
        # A seed run again with the same recipe, teacher and settings (in another folder) is one
        # measurement, not two: counted once, the first folder by name, the others named.
        first: dict[int, dict] = {}
        for r in sorted(runs, key=lambda r: (r["config"]["seed"], folder_of(r))):
            first.setdefault(r["config"]["seed"], r)
        repeated = sorted(folder_of(r) for r in runs if first[r["config"]["seed"]] is not r)
        runs = list(first.values())
        # Rounded: accuracies are float32, so equal ones can differ by 1e-7.
        gains = [round(r["gain_over_twin"], 6) for r in runs]
        students = [r["evaluation"]["test"]["top1"] for r in runs]
        twins = [s - g for s, g in zip(students, gains)]
        rows.append({"recipe": labels[key], "method": (runs[0].get("distillation") or {}).get(
                         "method", "kd"), "model": runs[0]["model"],
                     "teacher": teacher_names.get(key[1]), "teacher_in_recipe": key[1] != usual,
                     "seeds": [r["config"]["seed"] for r in runs],
                     "student_top1": students, "twin_top1": twins,
                     "student_mean": statistics.mean(students), "student_sd": sd(students),
                     "twin_mean": statistics.mean(twins), "twin_sd": sd(twins),
                     "gains": gains, "mean_gain": round(statistics.mean(gains), 6),
                     "gain_interval": t_interval(gains),
                     "seeds_not_worse": sum(g >= 0 for g in gains), "repeated": repeated})
    return sorted(rows, key=lambda row: row["recipe"])


def folder_of(report: dict) -> str:
    return str(report.get("run_dir", report["name"]))


def repeats_line(gains: list[dict]) -> str:
    """A line naming the runs left out of the gains as repeats of a seed; "" where none is."""
    repeated = [path for row in gains for path in row.get("repeated", [])]
    if not repeated:
        return ""
    more = f" and {len(repeated) - 3} more" if len(repeated) > 3 else ""
    return (f"Counted once, as a seed run again with the same recipe, teacher and settings: "
            f"{', '.join(repeated[:3])}{more} left out of the gains.")


def unnamed_teacher(gains: list[dict]) -> str:
    """What a title adds about the teacher of the rows that do not name theirs: nothing where
    every row has the same teacher."""
    if not any(row.get("teacher_in_recipe") for row in gains):
        return ""
    teacher = next(row["teacher"] for row in gains if not row.get("teacher_in_recipe"))
    return f"; teacher {teacher} unless named" if teacher else ""


# Two-sided 95% quantiles of Student's t for 1 to 30 degrees of freedom, from the standard table:
# one constant table rather than scipy (tens of MB) for a single function.
T_975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def t_interval(values: list[float]) -> tuple[float, float] | None:
    """The 95% confidence interval of the mean (t-interval over seeds); None for one value."""
    if len(values) < 2:
        return None
    mean, df = statistics.mean(values), len(values) - 1
    half = (T_975[df - 1] if df <= len(T_975) else 1.96) * statistics.stdev(values) / math.sqrt(
        len(values))
    return mean - half, mean + half


GAIN_COLUMNS = ["recipe", "method", "seeds", "student top-1", "twin top-1", "gain per seed",
                "mean gain [95% CI]", "student >= twin"]


def gain_rows(gains: list[dict]) -> list[list[str]]:
    def points(values: list[float]) -> str:
        return ", ".join(f"{100 * v + 0.0:+.2f}" for v in values)  # + 0.0: no "-0.00"

    def accuracies(values: list[float]) -> str:
        return ", ".join(f"{100 * v:.2f}" for v in values)

    def spread(values: list[float], mean: float, sd: float | None) -> str:
        if sd is None:
            return accuracies(values)
        listed = f" ({accuracies(values)})" if len(values) <= 5 else ""
        return f"{100 * mean:.2f} ± {100 * sd:.2f}{listed}"

    def interval(g: dict) -> str:
        low_high = g["gain_interval"]
        return points([g["mean_gain"]]) + (
            f" [{points([low_high[0]])}, {points([low_high[1]])}]" if low_high else "")

    return [[g["recipe"], g.get("method", "kd"), ", ".join(map(str, g["seeds"])),
             spread(g["student_top1"], g["student_mean"], g["student_sd"]),
             spread(g["twin_top1"], g["twin_mean"], g["twin_sd"]), points(g["gains"]),
             interval(g),
             f"{g['seeds_not_worse']} of {len(g['seeds'])} seed{'s' * (len(g['seeds']) > 1)}"]
            for g in gains]
