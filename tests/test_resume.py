import json
import os
import signal

import pytest
from safetensors.torch import load_file

from distill import training
from distill.cli import main

ARGS = ["--epochs", "3", "--train-batches", "4", "--val-batches", "1", "--test-images", "200",
        "--no-progress"]


def interrupt_once_in_epoch_two(monkeypatch):
    """SIGTERM this process in the middle of the second epoch, as `kill` would."""
    fired = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 1 and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(training.EpochTimes, "on_train_batch_end", on_train_batch_end,
                        raising=False)


def test_a_killed_run_resumes_to_the_same_result(tmp_path, capsys, monkeypatch):
    main(["teacher", "--out", str(tmp_path / "straight"), *ARGS])

    interrupted = tmp_path / "interrupted"
    interrupt_once_in_epoch_two(monkeypatch)
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
    figures = [json.loads((tmp_path / run / "report.json").read_text())["evaluation"]["test"]
               for run in ("straight", "interrupted")]
    assert figures[0] == figures[1]


def test_resume_with_nothing_to_resume_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["teacher", "--out", str(tmp_path / "new"), "--resume", *ARGS])
    assert "Nothing to resume" in capsys.readouterr().out
