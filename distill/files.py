"""Files a user owns: one atomic write, run folders that distill made, one process per folder.

distill replaces or deletes only what it wrote itself: a run folder holds a marker file written
before anything else, and a folder without it (or with files distill did not write) is never
replaced. The system's folders, a home folder, the repository and the releases in models/ are
never a run folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from distill.errors import DistillError

RUN_MARKER = ".distill-run"
RUN_LOCK = ".lock"
ASIDE = ".replaced"  # a run being replaced, until its replacement has started cleanly
# Everything a run writes into its folder; anything else there is the user's.
RUN_FILES = {RUN_MARKER, RUN_LOCK, ASIDE, "report.json", "report.md", "weights.safetensors", "curves.png",
             "confusion.png", "examples.png", "checkpoints", "logs", "metrics-before-resume.csv",
             "model.onnx", "model-int8.onnx"}
PACKAGE_ROOT = Path(__file__).resolve().parent
REPOSITORY = PACKAGE_ROOT.parent


def package_data(name: str) -> Path:
    """A folder of package data: inside the package where a wheel installed it, else at the
    repository's top level (a checkout, an editable install)."""
    installed = PACKAGE_ROOT / name
    return installed if installed.is_dir() else REPOSITORY / name


# Released weights, written by `distill publish`: `timm.create_model(name, pretrained=True)`
# loads models/NAME/weights.safetensors (distill.nets). Named here, where no torch is imported,
# so the CLI's path callbacks can look a release up before a command starts.
MODELS_DIR = package_data("models")


def install_command(extra: str) -> str:
    """The command that installs one of distill's extras: from the checkout distill runs from,
    else (a wheel, which has no ".[onnx]" to point at) the packages the extra names."""
    if not (PACKAGE_ROOT / "models").is_dir() and (REPOSITORY / "pyproject.toml").is_file():
        return f'pip install -e ".[{extra}]"'
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    wanted = [Requirement(line) for line in requires("distill") or []]
    named = [f'"{r.name}{r.specifier}"' for r in wanted
             if r.marker is not None and r.marker.evaluate({"extra": extra})]
    return f"pip install {' '.join(named)}"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` only if the block ends
    without an error, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = fresh_file_beside(path)
    mode = tmp.stat().st_mode
    try:
        yield tmp
        # safetensors writes its files 0600 whatever the umask: give them the fresh file's.
        tmp.chmod(mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fresh_file_beside(path: Path) -> Path:
    """A new, empty file in `path`'s folder with the permissions the user's umask gives any file
    they save (0644 under the usual 022). tempfile.mkstemp would make it 0600, and the rename
    would leave weights, reports and exports unreadable to the user's group and web server."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # another writer's: 48 random bits seldom meet
            continue
        return tmp


def write_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def shipped_or_given(path: Path) -> Path:
    """`path` itself, or, where nothing is there and it names a release in models/
    (`models/convnet_tiny`, `models/digitnet/weights.safetensors`, `models`), the release that
    ships with distill: a wheel's user runs the README's commands from any folder."""
    if path.exists() or path.is_absolute() or path.parts[:1] != ("models",):
        return path
    shipped = MODELS_DIR.joinpath(*path.parts[1:])
    return shipped if shipped.exists() else path


def shipped_or_given_all(paths: list[Path] | None) -> list[Path] | None:
    """`shipped_or_given` for each path; `models/*`, which no shell expands where there is no
    models/ folder, stands for every shipped release it matches."""
    if paths is None:
        return None
    found = []
    for path in paths:
        pattern = not path.exists() and path.parts[:1] == ("models",) and any(
            c in str(path) for c in "*?[")
        matches = sorted(MODELS_DIR.glob(str(Path(*path.parts[1:])))) if pattern else []
        found += matches or [shipped_or_given(path)]
    return found


def shown_path(path: Path) -> str:
    """How a table names a run: relative to the working folder where it is below it, a shipped
    release as `release_as_typed` names it, else its full path."""
    resolved = path.resolve()
    if resolved.is_relative_to(Path.cwd()):
        return os.path.relpath(resolved)
    return release_as_typed(resolved) or str(resolved)


def release_as_typed(path: Path) -> str | None:
    """models/NAME for a path among the shipped releases where that name, typed here, reads the
    same release (`shipped_or_given`), not its folder deep in a wheel's site-packages; else None."""
    if not is_in_releases(path):
        return None
    named = Path("models", path.resolve().relative_to(releases_dir()))
    return None if named.exists() else str(named)


def releases_dir() -> Path:
    return MODELS_DIR.resolve()


def is_in_releases(path: Path) -> bool:
    resolved, releases = path.expanduser().resolve(), releases_dir()
    return resolved == releases or releases in resolved.parents


SYSTEM_TREES = ("/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/lib", "/boot", "/var")


def whole_system(resolved: Path) -> str | None:
    """What a folder is where writing a run there, or reading every file below it as a dataset,
    would reach a whole disk, home or system: "the file system's root", ...; else None."""
    if resolved == Path(resolved.anchor):
        return "the file system's root"
    if resolved == Path.home().resolve():
        return "your home folder"
    if any(resolved == Path(tree) for tree in SYSTEM_TREES):
        return "a system folder"
    return None


def protected_reason(path: Path) -> str | None:
    """Why `path` may never be a run folder (or be written into by a run), else None."""
    resolved = path.expanduser().resolve()
    if what := whole_system(resolved):
        return f"it is {what}"
    if resolved == REPOSITORY and (REPOSITORY / "pyproject.toml").is_file():
        return "it is distill's own repository"
    if is_in_releases(resolved):
        return "models/ holds the releases (`distill publish` writes there)"
    return None


def foreign_entries(folder: Path) -> list[str]:
    """The names in `folder` that no distill run writes."""
    return sorted(p.name for p in folder.iterdir() if p.name not in RUN_FILES)


def check_run_folder(out: Path, replacing: bool) -> None:
    """Refuse a folder distill did not make: one with files no run writes and no marker (a run
    of an older distill, without the marker, holds only run files). `replacing`: --overwrite or
    --resume asked to act on what is there, which must then hold nothing of the user's."""
    if reason := protected_reason(out):
        raise DistillError(f"{out} cannot hold a run: {reason}. Choose another folder, e.g. "
                           "--out runs/NAME.")
    if out.exists() and not out.is_dir():
        raise DistillError(f"{out} is a file, not a folder. Choose a folder for the run.")
    if not out.is_dir():
        return
    foreign = foreign_entries(out)
    if foreign and not (out / RUN_MARKER).is_file():
        raise DistillError(f"{out} is a folder distill did not make (it holds {listed(foreign)}): "
                           "distill never writes into or replaces it. Choose a new or empty "
                           "folder.")
    if foreign and replacing:
        raise DistillError(f"{out} holds files distill did not write ({listed(foreign)}): move "
                           "them out first; distill never deletes them.")
    # Without the marker (a run of an older distill), only a finished run or one with a
    # checkpoint is known to be distill's: a bare logs/ folder may be anyone's.
    known = any((out / name).exists() for name in (RUN_MARKER, "report.json",
                                                     "checkpoints/last.ckpt"))
    if replacing and any(out.iterdir()) and not known:
        raise DistillError(f"{out} does not look like a run distill made (no {RUN_MARKER}, no "
                           "report.json, no checkpoint): distill does not replace it. Choose "
                           "another folder.")


def listed(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def start_run_folder(out: Path) -> None:
    """Create the run folder with its marker, the first thing written in it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_MARKER).touch()
    except OSError as error:
        raise DistillError(f"Cannot write the run folder {out}: {error.strerror}. Choose a folder "
                           "you can write to.") from error


def set_aside(out: Path) -> Path:
    """Move a run about to be replaced into its folder's ASIDE subfolder (the lock and marker
    stay); `drop_aside` deletes it once the new run has started cleanly, `restore_aside` puts it
    back if the new run fails before that."""
    aside = out / ASIDE
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    for entry in out.iterdir():
        if entry.name not in (RUN_MARKER, RUN_LOCK, ASIDE):
            entry.rename(aside / entry.name)
    return aside


def drop_aside(out: Path) -> None:
    shutil.rmtree(out / ASIDE, ignore_errors=True)


def restore_aside(out: Path) -> None:
    aside = out / ASIDE
    if not aside.is_dir():
        return
    for entry in out.iterdir():
        if entry.name not in (RUN_MARKER, RUN_LOCK, ASIDE):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for entry in aside.iterdir():
        entry.rename(out / entry.name)
    aside.rmdir()


_held: dict[Path, int] = {}


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """One process at a time per run folder (after `check_run_folder`, which it creates). The lock
    is the kernel's (flock) on a file inside the folder: it goes with the process, so a crash
    leaves no stale lock. Re-entrant within a process."""
    key = out.expanduser().resolve()
    if key in _held:
        yield
        return
    start_run_folder(out)
    fd = os.open(key / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DistillError(f"{out} is in use by another distill process (pid {holder}). Wait for "
                           "it to finish, or choose another folder.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held[key] = fd
    try:
        yield
    finally:
        del _held[key]
        os.close(fd)  # closing releases the lock; the file stays, empty of meaning
