"""Two CPU processes (DDP over gloo), as `distill teacher --devices 2` starts them: the same
results as one process, one writer, no hang, and a killed run that resumes."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from distill.cli import main

SLICE = ["--accelerator", "cpu", "--val-batches", "2", "--test-images", "300", "--no-progress"]
# A hung process group fails the test instead of the suite.
TIMEOUT = 600


def distill(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "distill", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def epochs(run):
    with (run / "logs" / "metrics.csv").open() as f:
        rows = [row for row in csv.DictReader(f) if row.get("val_loss")]
    return [(int(row["epoch"]), float(row["val_loss"]), float(row["val_acc"])) for row in rows]


def test_two_processes_train_the_teacher_and_a_student_as_one_does(tmp_path, data_dir):
    for devices in ("1", "2"):
        distill("teacher", "--devices", devices, "--out", f"t{devices}", "--epochs", "2",
                "--train-batches", "4", *SLICE, cwd=tmp_path)
    one, two = tmp_path / "t1", tmp_path / "t2"
    # The same global batches, the gradients averaged over the processes: equal up to the
    # order of float sums (DigitNet has no batch norm).
    for (e1, loss1, acc1), (e2, loss2, acc2) in zip(epochs(one), epochs(two), strict=True):
        assert e1 == e2 and loss2 == pytest.approx(loss1, rel=1e-4) and acc1 == acc2
    reports = [json.loads((run / "report.json").read_text()) for run in (one, two)]
    assert reports[1]["evaluation"]["test"]["top1"] == reports[0]["evaluation"]["test"]["top1"]
    assert reports[1]["training"]["images_per_epoch"] == 4 * 128  # --batch-size is global
    assert reports[0]["training"]["device"].startswith("cpu (")
    assert reports[1]["training"]["device"].startswith("2 processes, each on cpu (")
    # One writer: the run folder holds one run's files, its log one row an epoch.
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert len(epochs(two)) == 2

    out = distill("student", "--recipe", "tiny", "--teacher", "t1", "--runs", "s2", "--devices",
                  "2", "--epochs", "1", "--train-batches", "4", *SLICE, cwd=tmp_path)
    assert out.count("Wrote ") == 2 and out.count("Student against its twin") == 1  # rank zero speaks
    student = json.loads((tmp_path / "s2" / "student-tiny" / "report.json").read_text())
    assert student["gain_over_twin"] is not None
    assert sorted(p.name for p in (tmp_path / "s2").iterdir()) == [
        ".cache", "student-tiny", "student-tiny-twin"]


def cache_share(rank, world_size, folder, data_dir):
    """One of two processes computing the teacher's logits table together."""
    import torch.distributed as dist

    from distill.cache import teacher_logits_table
    from distill.training import TrainConfig
    from tests.test_cache import LIMITS, small_teacher

    os.environ["DISTILL_DATA_DIR"] = str(data_dir)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=world_size)
    try:
        config = TrainConfig(model="convnet_micro", epochs=3, batch_size=64)
        teacher_logits_table(small_teacher(), config, LIMITS, folder / "shared", data_dir,
                             progress=False)
    finally:
        dist.destroy_process_group()


def test_two_processes_split_the_teachers_pass_into_the_table_one_process_writes(tmp_path,
                                                                                  data_dir):
    import torch
    import torch.multiprocessing as mp

    from distill.cache import teacher_logits_table
    from distill.training import TrainConfig
    from tests.test_cache import LIMITS, small_teacher

    mp.spawn(cache_share, args=(2, tmp_path, data_dir), nprocs=2, join=True)
    config = TrainConfig(model="convnet_micro", epochs=3, batch_size=64)
    alone = teacher_logits_table(small_teacher(), config, LIMITS, tmp_path / "alone", data_dir,
                                 progress=False)
    together = teacher_logits_table(small_teacher(), config, LIMITS, tmp_path / "shared",
                                    data_dir, progress=False)  # read back, nothing computed
    assert torch.equal(alone, together)
    assert len(list((tmp_path / "shared").glob("teacher-logits-*/epoch-*"))) == 3


def test_a_killed_two_process_run_resumes(tmp_path, data_dir):
    args = ["-m", "distill", "teacher", "--devices", "2", "--out", "k", "--epochs", "2",
            "--train-batches", "30", *SLICE]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Its own session, so that a run that fails the test is killed with all its ranks: ranks
    # left behind hang on to the CPU and made the next run of this test fail too.
    run = subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (tmp_path / "k" / "checkpoints" / "last.ckpt").is_file():
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        # As a cluster's scheduler stops a job: every process. Lightning's own handler broadcast
        # from inside the signal handler and left the two processes waiting on each other (or
        # rank one with a traceback) in about two tries of three. Rank one holds the output
        # pipe too, so one left hanging fails the timeout.
        os.killpg(run.pid, signal.SIGTERM)
        said = run.communicate(timeout=120)[0]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    # One line from rank zero; rank one stops at the same batch, without a traceback of its own.
    assert run.returncode == 1 and "--resume" in said and "Traceback" not in said
    distill("teacher", "--devices", "2", "--out", "k", "--epochs", "2", "--train-batches", "30",
            "--resume", *SLICE, cwd=tmp_path)
    report = json.loads((tmp_path / "k" / "report.json").read_text())
    assert report["training"]["epochs_run"] == 2
    assert [e for e, _, _ in epochs(tmp_path / "k")] == [0, 1]


@pytest.mark.parametrize("args, message", [
    (["--devices", "999"], "--devices 999: this machine has"),
    (["--strategy", "fsdp"], "Unknown strategy 'fsdp'"),
    (["--num-nodes", "2"], "--num-nodes 2 needs a multi-node launch"),
    (["--devices", "2", "--batch-size", "127"], "does not split evenly over 2 processes"),
])
def test_bad_parallel_settings_are_one_line(tmp_path, capsys, monkeypatch, args, message):
    for name in ("MASTER_ADDR", "NODE_RANK", "SLURM_NTASKS", "RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["teacher", "--out", str(tmp_path / "t"), "--accelerator", "cpu", *args])
    assert exit_.value.code == 1
    said = " ".join(capsys.readouterr().out.split())
    assert message in said and "Traceback" not in said
    assert not (tmp_path / "t").exists()
