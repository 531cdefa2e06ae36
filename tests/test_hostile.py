"""A hostile but honest user: every case ends in a short message and a non-zero exit, with no
traceback, and leaves every file it was not asked to write exactly as it was."""

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from distill.cli import main
from distill.files import MODELS_DIR

QUICK = ["--epochs", "1", "--train-batches", "2", "--val-batches", "1", "--test-images", "100",
         "--no-progress"]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root`: its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def refused(args: list[str], capsys, *watched: Path) -> str:
    """Run the command; it must fail cleanly and leave the watched folders untouched."""
    before = [snapshot(root) for root in watched]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert exit_.value.code not in (0, None)
    assert "Traceback" not in out
    assert [snapshot(root) for root in watched] == before
    return " ".join(out.split())  # rich folds long lines


def stray_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "x"
    (folder / "p").mkdir(parents=True)
    (folder / "notes").write_text("keep")
    return folder


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_folder_distill_did_not_make_is_never_replaced(tmp_path, capsys, flag):
    folder = stray_folder(tmp_path)
    (folder / "logs").mkdir()  # looks like a run interrupted in its first epoch
    out = refused(["teacher", "--out", str(folder), flag, *QUICK], capsys, tmp_path)
    assert "did not make" in out and "notes" in out
    assert (folder / "notes").read_text() == "keep"


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_folder_with_a_bare_logs_folder_is_not_taken_for_a_run(tmp_path, capsys, flag):
    (tmp_path / "x" / "logs").mkdir(parents=True)
    (tmp_path / "x" / "logs" / "mine.txt").write_text("keep")
    out = refused(["teacher", "--out", str(tmp_path / "x"), flag, *QUICK], capsys, tmp_path)
    assert "does not look like a run distill made" in out


def test_a_stray_file_in_a_run_folder_is_not_deleted_by_overwrite(teacher_run, tmp_path, capsys):
    run = tmp_path / "teacher"
    subprocess.run(["cp", "-a", str(teacher_run), str(run)], check=True)
    (run / "notes.txt").write_text("mine")
    out = refused(["teacher", "--out", str(run), "--overwrite", *QUICK], capsys, tmp_path)
    assert "notes.txt" in out and "move them out" in out


def test_a_run_of_another_dataset_in_the_folder_is_said_to_be_that_datasets(teacher_run, capsys):
    out = refused(["teacher", "--dataset", "fashion-mnist", "--out", str(teacher_run), *QUICK],
                  capsys, teacher_run)
    assert (f"{teacher_run} already holds a finished run of mnist. Pass --overwrite to replace "
            "it, or keep both: another folder for these runs (--out for a teacher, --runs for "
            "students).") in out


@pytest.mark.parametrize("dataset, message", [
    ("/", "/ is the file system's root, not a folder of images"),
    (str(Path.home()), "is your home folder, not a folder of images"),
    ("/proc", "/proc is a system folder, not a folder of images"),
    ("folder:", "folder: names no folder"),
    ("/tmp/a\x1b[31m/photos", "has a control character in its path: rename it."),
    ("", "--dataset is empty (a shell variable that is not set?): give it a value, or leave it "
         "out."),  # --dataset "$DATA" with DATA unset trained on MNIST
])
def test_a_whole_disk_a_home_a_system_folder_or_nothing_is_no_dataset(tmp_path, capsys, dataset, message):
    # --dataset / listed every file of the machine (and stopped at /proc/1/cwd, minutes later).
    out = refused(["teacher", "--dataset", dataset, "--out", str(tmp_path / "run"), *QUICK], capsys,
                  tmp_path)
    assert message in out


@pytest.mark.parametrize("args", [["student", "--recipe", "tiny", "--runs", ""],
                                  ["teacher", "--data-dir", " "], ["teacher", "--out="],
                                  ["evaluate", ""]])
def test_an_empty_value_is_refused_where_it_would_mean_the_current_folder(tmp_path, capsys,
                                                                          monkeypatch, args):
    # `--runs "$RUNS"` with RUNS unset wrote student-tiny/ and its twin into the current folder;
    # an empty --data-dir would have downloaded MNIST there.
    monkeypatch.chdir(tmp_path)
    out = refused([*args, *QUICK], capsys, tmp_path)
    assert "is empty (a shell variable that is not set?)" in out


def test_students_are_not_written_into_a_teachers_run_folder(teacher_run, capsys):
    # `distill teacher --out runs/photos` makes runs/photos, where students of photos/ go by
    # default: they went into the teacher's folder, which --overwrite then refused to replace.
    out = refused(["student", "--recipe", "tiny", "--teacher", str(teacher_run), "--runs",
                   str(teacher_run), *QUICK], capsys, teacher_run)
    assert f"{teacher_run} is a run's own folder: students' runs go beside it" in out


@pytest.mark.parametrize("target", ["/", "~", "models", "models/digitnet"])
def test_system_home_and_release_folders_are_never_a_run_folder(tmp_path, capsys, target):
    folder = Path(target).expanduser() if target != "models" and not target.startswith(
        "models") else MODELS_DIR.parent / target
    out = refused(["teacher", "--out", str(folder), "--overwrite", *QUICK], capsys, MODELS_DIR)
    assert "cannot hold a run" in out


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    out = refused(["teacher", "--out", str(tmp_path / "file"), *QUICK], capsys, tmp_path)
    assert "is a file" in out


def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    # As root no permission bit stops a write; /proc refuses new folders to everyone.
    out = refused(["teacher", "--out", "/proc/distill-run", *QUICK], capsys, tmp_path)
    assert "Error" in out and "/proc/distill-run" in out


def test_overwrite_replaces_a_run_and_drops_the_old_one(teacher_run, tmp_path, capsys):
    run = tmp_path / "teacher"
    subprocess.run(["cp", "-a", str(teacher_run), str(run)], check=True)
    main(["teacher", "--out", str(run), "--overwrite", "--seed", "3", *QUICK])
    report = json.loads((run / "report.json").read_text())
    assert report["training"]["seed"] == 3
    assert not (run / ".replaced").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher"]


def test_a_failed_overwrite_puts_the_old_run_back(teacher_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / "teacher"
    subprocess.run(["cp", "-a", str(teacher_run), str(run)], check=True)
    weights = (run / "weights.safetensors").read_bytes()

    def no_training(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("distill.runs.fit", no_training)
    out = refused(["teacher", "--out", str(run), "--overwrite", *QUICK], capsys)
    assert "No space left" in out
    assert (run / "weights.safetensors").read_bytes() == weights
    assert not (run / ".replaced").exists()


def test_a_second_process_on_the_same_run_folder_is_told_so(tmp_path, capsys):
    from distill.files import RUN_LOCK, RUN_MARKER

    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_MARKER).touch()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(run / RUN_LOCK)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode())\n"
         "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        out = refused(["teacher", "--out", str(run), *QUICK], capsys)
        assert "in use by another distill process" in out and str(holder.pid) in out
    finally:
        holder.kill()
        holder.wait()
    # The holder died without a word: its lock went with it.
    from distill.files import run_lock

    with run_lock(run):
        pass


def test_a_truncated_checkpoint_with_resume_is_one_line(teacher_run, tmp_path, capsys):
    run = tmp_path / "teacher"
    subprocess.run(["cp", "-a", str(teacher_run), str(run)], check=True)
    (run / "report.json").unlink()  # an unfinished run
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    out = refused(["teacher", "--out", str(run), "--resume", *QUICK], capsys)
    assert "damaged" in out and "last.ckpt" in out


def test_publish_never_replaces_a_release_silently(teacher_run, tmp_path, capsys):
    release = tmp_path / "digitnet"
    main(["publish", str(teacher_run), str(release)])
    capsys.readouterr()
    out = refused(["publish", str(teacher_run), str(release)], capsys, tmp_path)
    assert "already holds a release" in out and "--overwrite" in out
    main(["publish", str(teacher_run), str(release), "--overwrite"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digitnet"]


def test_publish_checks_everything_before_writing(teacher_run, tmp_path, capsys):
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(teacher_run), str(run)], check=True)
    (run / "curves.png").unlink()
    release = tmp_path / "digitnet"
    main(["publish", str(teacher_run), str(release)])
    capsys.readouterr()
    out = refused(["publish", str(run), str(release), "--overwrite"], capsys, release)
    assert "curves.png" in out


def test_export_never_writes_over_its_input_or_into_a_release(teacher_run, tmp_path, capsys):
    weights = teacher_run / "weights.safetensors"
    out = refused(["export", str(teacher_run), "--out", str(weights)], capsys, teacher_run)
    assert "must end in .onnx" in out
    out = refused(["export", str(teacher_run), "--out", str(MODELS_DIR / "digitnet" / "m.onnx")],
                  capsys, MODELS_DIR)
    assert "releases" in out


def tampered(tmp_path: Path, architecture: str, kwargs: str) -> Path:
    state = {"w": torch.zeros(1)}
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path), metadata={"architecture": architecture, "kwargs": kwargs})
    return path


@pytest.mark.parametrize("architecture, kwargs, message", [
    ("hf-hub:timm/resnet18.a1_in1k", "{}", "not one of distill's"),
    ("local-dir:/etc", "{}", "not one of distill's"),
    ("resnet50", "{}", "not one of distill's"),
    ("convnet_tiny", '{"checkpoint_path": "/etc/passwd"}', "not an argument of convnet_tiny"),
    ("convnet_tiny", '{"pretrained_cfg_overlay": {"file": "/etc/passwd"}}', "not an argument"),
    ("mlp_800", '{"hidden": [4096, 4096, 4096, 4096, 4096, 4096]}', "over distill's limit"),
    ("mlp_800", '{"hidden": [100000000]}', "out of bounds"),
    ("mlp_800", "[" * 5000, "not a small JSON object"),
])
def test_a_weights_file_only_ever_builds_one_of_distills_networks(tmp_path, capsys, architecture,
                                                                   kwargs, message):
    path = tampered(tmp_path, architecture, kwargs)
    (tmp_path / "digit.png").write_bytes(b"")
    out = refused(["predict", str(path), str(tmp_path / "digit.png")], capsys, tmp_path)
    assert message in out and "refused" in out


@pytest.mark.parametrize("classes, normalization", [
    ('["a", "b"]', '{"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}'),  # 2 names, 3 outputs
    ('["a", "b", "c"]', '{"mean": [0.5], "std": [0.2]}'),  # one channel's, for three
    ('["a", "b", "c"]', "[" * 5000),
    ('["a", "b", "c"]', '{"mean": "x"}'),
    ('["a", "b", "c"]', '{"mean": [0.5, 0.5, 0.5], "std": [0.2, 0, 0.2]}'),  # a spread of 0
    ('["a", "b", "c"]', '{"mean": [NaN, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}'),
    ('["a", "b", "\\u001b]0;owned\\u0007"]', '{"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}'),
])
def test_a_folder_networks_description_is_checked_against_the_network(tmp_path, capsys, classes,
                                                                       normalization):
    import timm

    kwargs = {"num_classes": 3, "in_chans": 3}
    state = {k: v.contiguous() for k, v in timm.create_model("convnet_tiny", **kwargs).state_dict().items()}
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path), metadata={
        "architecture": "convnet_tiny", "kwargs": json.dumps(kwargs), "classes": classes,
        "dataset": f"folder:{tmp_path / 'gone'}", "normalization": normalization})
    (tmp_path / "photo.png").write_bytes(b"")
    out = refused(["predict", str(path), str(tmp_path / "photo.png")], capsys, tmp_path)
    assert "description is not readable" in out and "refused" in out


def test_nan_weights_do_not_predict(teacher_run, tmp_path, capsys):
    state = load_file(str(teacher_run / "weights.safetensors"))
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
             for k, v in state.items()}
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path), metadata={"architecture": "digitnet", "kwargs": "{}"})
    out = refused(["predict", str(path), str(tmp_path / "none.png")], capsys, tmp_path)
    assert "NaN" in out


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels in a few dozen bytes (its pixels never come)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [10_000, 20_000])
def test_a_huge_image_is_refused_before_it_is_decoded(tmp_path, capsys, size):
    image = tmp_path / "huge.png"
    image.write_bytes(png_header(size, size))
    out = refused(["predict", str(MODELS_DIR / "convnet_tiny"), str(image)], capsys, tmp_path)
    assert f"{size}x{size}" in out


@pytest.mark.parametrize("text, message", [
    ("network: [&a ['x','x','x','x','x','x','x','x','x'], "  # a billion strings once expanded
     + "".join(f"&{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}], "
               for p, c in zip("abcdefgh", "bcdefghi")) + "*i]\n", "must be str"),
    ("network: convnet_tiny\nschedule: {epochs: 1000000000000}\n", "between 1 and 1000"),
    ("network: convnet_tiny\nseed: -1\n", "'seed' is -1"),
    ("network: convnet_tiny\noptimizer: {lr: .inf}\n", "'optimizer.lr' is inf"),
    ("network: convnet_tiny\nbatch_size: 10000000\n", "'batch_size' is 10000000"),
])
def test_hostile_recipes_are_one_line(tmp_path, capsys, text, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    started = time.perf_counter()
    out = refused(["student", "--recipe", str(recipe), "--runs", str(tmp_path / "runs")], capsys,
                  tmp_path)
    assert message in out
    assert time.perf_counter() - started < 10


def test_a_recipe_of_binary_bytes_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(bytes(range(256)) * 4)
    out = refused(["student", "--recipe", str(recipe)], capsys, tmp_path)
    assert "not a text file" in out


@pytest.mark.parametrize("args", [["--seed", "-1"], ["--seed", str(2**70)], ["--lr", "inf"],
                                  ["--batch-size", "60000"], ["--epochs", "1000000000000"]])
def test_out_of_range_options_are_refused_before_anything_runs(tmp_path, capsys, args):
    out = refused(["teacher", "--out", str(tmp_path / "run"), *QUICK, *args], capsys, tmp_path)
    assert "Invalid value" in out


def test_a_batch_larger_than_the_training_slice_is_one_line():
    from distill.errors import DistillError
    from distill.runs import check_batch_size
    from distill.training import Limits

    with pytest.raises(DistillError, match="larger than the 100 training images"):
        check_batch_size(128, Limits(train_size=100))


def test_data_dir_naming_a_file_with_brackets_is_printed_as_is(tmp_path, capsys):
    odd = tmp_path / "[red]data"
    odd.write_text("not a folder")
    out = refused(["teacher", "--data-dir", str(odd), "--out", str(tmp_path / "run"), *QUICK],
                  capsys, tmp_path)
    assert "[red]data is a file" in out


def test_an_install_hint_keeps_its_brackets(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    out = refused(["export", str(MODELS_DIR / "convnet_tiny")], capsys, MODELS_DIR)
    assert 'pip install -e ".[onnx]"' in out


def test_the_demo_on_a_port_in_use_is_one_line(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = refused(["demo", "--port", str(port)], capsys)
    assert f"127.0.0.1:{port}" in out and "--port" in out


def test_data_files_are_all_checked_before_training(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("distill.datasets.idx.download_idx", lambda dataset, folder: None)  # no network here
    for name in os.listdir(data_dir):
        if name.startswith("train"):
            (tmp_path / "data").mkdir(exist_ok=True)
            (tmp_path / "data" / name).symlink_to(data_dir / name)
    out = refused(["teacher", "--data-dir", str(tmp_path / "data"), "--out",
                   str(tmp_path / "run"), *QUICK], capsys)
    assert "t10k-images-idx3-ubyte" in out
    assert not (tmp_path / "run").exists()


def test_the_report_of_the_releases_is_written_outside_models(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = snapshot(MODELS_DIR)
    main(["report", str(MODELS_DIR), "--no-measure"])
    assert "runs/comparison.md" in " ".join(capsys.readouterr().out.split())
    assert (tmp_path / "runs" / "comparison.md").is_file()
    assert snapshot(MODELS_DIR) == before
    out = refused(["report", str(MODELS_DIR), "--no-measure", "--out", str(MODELS_DIR / "x")],
                  capsys, MODELS_DIR, tmp_path / "runs")
    assert "holds the releases" in out
