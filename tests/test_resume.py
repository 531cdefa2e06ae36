import json
import os
import signal
import stat
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill import training
from distill.cli import main
from distill.plots import read_metrics

ARGS = ["--epochs", "3", "--train-batches", "4", "--val-batches", "1", "--test-images", "200",
        "--no-progress"]


def interrupt_once_in_epoch(monkeypatch, epoch=2):
    """SIGTERM this process in the middle of `epoch` (counted from 1), as `kill` would."""
    fired = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.current_epoch == epoch - 1 and batch_idx == 1 and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(training.EpochTimes, "on_train_batch_end", on_train_batch_end,
                        raising=False)


def test_a_killed_run_resumes_to_the_same_result(tmp_path, capsys, monkeypatch):
    main(["teacher", "--out", str(tmp_path / "straight"), *ARGS])

    interrupted = tmp_path / "interrupted"
    interrupt_once_in_epoch(monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        main(["teacher", "--out", str(interrupted), *ARGS])
    assert exit_.value.code == 1
    assert "--resume" in capsys.readouterr().out
    assert not (interrupted / "report.json").exists()

    with pytest.raises(SystemExit):  # neither resumed nor overwritten: refused
        main(["teacher", "--out", str(interrupted), *ARGS])
    assert "unfinished run" in capsys.readouterr().out

    main(["teacher", "--out", str(interrupted), "--resume", *ARGS])
    straight = load_file(str(tmp_path / "straight" / "weights.safetensors"))
    resumed = load_file(str(interrupted / "weights.safetensors"))
    assert all((straight[k] == resumed[k]).all() for k in straight)
    reports = [json.loads((tmp_path / run / "report.json").read_text())
               for run in ("straight", "interrupted")]
    assert reports[0]["evaluation"]["test"] == reports[1]["evaluation"]["test"]
    # The report and the curves cover the epochs before the interruption too.
    assert reports[1]["training"]["epochs_run"] == 3
    assert len(reports[1]["training"]["epoch_seconds"]) == 3
    assert (read_metrics(tmp_path / "interrupted" / "logs" / "metrics.csv")
            == read_metrics(tmp_path / "straight" / "logs" / "metrics.csv"))
    assert not (interrupted / "metrics-before-resume.csv").exists()


def worse_every_epoch(self, x, labels, batch_idx):
    return self(x), {"ce": torch.tensor(float(self.current_epoch))}


def test_a_resumed_run_continues_from_its_last_epoch_not_its_best(tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.setattr(training.Classifier, "validation_losses", worse_every_epoch)
    interrupt_once_in_epoch(monkeypatch, epoch=3)
    with pytest.raises(SystemExit):
        main(["teacher", "--out", str(tmp_path / "t"), *ARGS])
    capsys.readouterr()
    main(["teacher", "--out", str(tmp_path / "t"), "--resume", *ARGS])
    out = capsys.readouterr().out
    assert "t: epoch 3/3" in out and "epoch 2/3" not in out
    report = json.loads((tmp_path / "t" / "report.json").read_text())
    assert report["training"]["best_epoch"] == 0


def test_a_moved_run_resumes_and_keeps_its_best_epoch(tmp_path, capsys, monkeypatch):
    """A run folder renamed, or copied from another machine, before --resume: Lightning forgets
    the best score when its checkpoints' folder has another path, and would keep the next epoch."""
    monkeypatch.setattr(training.Classifier, "validation_losses", worse_every_epoch)
    interrupt_once_in_epoch(monkeypatch, epoch=3)
    with pytest.raises(SystemExit):
        main(["teacher", "--out", str(tmp_path / "there"), *ARGS])
    (tmp_path / "there").rename(tmp_path / "here")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["teacher", "--out", str(tmp_path / "here"), "--resume", *ARGS])
    assert "here: epoch 3/3" in capsys.readouterr().out
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    report = json.loads((tmp_path / "here" / "report.json").read_text())
    assert report["training"]["best_epoch"] == 0


def test_resume_with_nothing_to_resume_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["teacher", "--out", str(tmp_path / "new"), "--resume", *ARGS])
    assert "Nothing to resume" in capsys.readouterr().out


def test_ctrl_c_ends_with_the_resume_hint(tmp_path, capsys, monkeypatch):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(SystemExit) as exit_:
        patch.setattr(training.EpochTimes, "on_train_batch_end", on_train_batch_end,
                      raising=False)
        main(["teacher", "--out", str(tmp_path / "t"), *ARGS])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert "interrupted in epoch 1" in out and "--resume" in out and "Traceback" not in out
    # No epoch was finished: --resume starts the run again, and the message says so.
    assert "no epoch had finished" in out
    main(["teacher", "--out", str(tmp_path / "t"), "--resume", *ARGS])
    assert (tmp_path / "t" / "report.json").is_file()


def test_the_same_seed_gives_the_same_metrics_twice(tmp_path):
    for run in ("a", "b"):
        main(["teacher", "--out", str(tmp_path / run), "--seed", "7", *ARGS])
    reports = [json.loads((tmp_path / run / "report.json").read_text()) for run in ("a", "b")]
    assert reports[0]["evaluation"] == reports[1]["evaluation"]
    assert reports[0]["training"]["seed"] == 7
    assert {"torch", "lightning", "timm", "git_commit"} <= set(reports[0]["environment"])
    assert reports[0]["training"]["device"].startswith("cpu")


def test_an_interrupted_report_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    from distill.files import write_atomic

    path = tmp_path / "report.json"
    write_atomic(path, '{"complete": true}\n')

    class Boom(Exception):
        pass

    real_write_text = Path.write_text

    def fail_halfway(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2])
        raise Boom

    monkeypatch.setattr(Path, "write_text", fail_halfway)
    with pytest.raises(Boom):
        write_atomic(path, '{"complete": false, "truncated')
    assert json.loads(path.read_text()) == {"complete": True}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_a_written_file_has_the_permissions_of_any_file_the_user_saves(tmp_path, umask, mode):
    # Weights, reports and exports were 0600 under any umask: unreadable to the user's group.
    from safetensors.torch import save_file

    from distill.files import atomic_path, write_atomic

    before = os.umask(umask)
    try:
        write_atomic(tmp_path / "report.json", "{}\n")
        with atomic_path(tmp_path / "weights.safetensors") as tmp:  # which safetensors makes 0600
            save_file({"w": torch.zeros(2)}, str(tmp))
    finally:
        os.umask(before)
    for name in ("report.json", "weights.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "weights.safetensors"]


def test_ctrl_c_while_a_later_epochs_teacher_logits_are_computed_ends_with_the_resume_hint(
        teacher_run, tmp_path, capsys, monkeypatch):
    # Epochs after the first four are computed when training reaches them, inside the run: a
    # Ctrl-C there is the run's interruption, with its epochs kept for --resume.
    from distill import cache

    computed = cache.compute_epochs

    def interrupted_after_four(teacher, datamodule, epochs, *args):
        if epochs[0] >= 4:
            raise KeyboardInterrupt
        computed(teacher, datamodule, epochs, *args)

    args = ["student", "--recipe", "tiny", "--teacher", str(teacher_run), "--runs",
            str(tmp_path), "--no-twin", "--epochs", "6", "--train-batches", "2",
            "--val-batches", "1", "--test-images", "100", "--no-progress"]
    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        patch.setattr(cache, "compute_epochs", interrupted_after_four)
        main(args)
    out = " ".join(capsys.readouterr().out.split())
    assert "Training was interrupted in epoch 5" in out and "--resume" in out
    main([*args, "--resume"])
    assert (tmp_path / "student-tiny" / "report.json").is_file()
