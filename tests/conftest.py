import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
SHARED_FASHION = REPO.parent / "shared" / "data" / "fashion-mnist"


def mnist_folder() -> Path:
    """$DISTILL_DATA_DIR, else ../shared/data/mnist beside the repo."""
    return Path(os.environ.get("DISTILL_DATA_DIR") or SHARED_MNIST)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    if not (SHARED_FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"The Fashion-MNIST tests need its files in {SHARED_FASHION}.")
    return SHARED_FASHION


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST files; a test that asks for them fails where there are none."""
    folder = mnist_folder()
    if not (folder / "train-images-idx3-ubyte.gz").exists() and not (
            folder / "train-images-idx3-ubyte").exists():
        pytest.fail(f"The tests need the real MNIST files: none in {folder}. "
                    "Set DISTILL_DATA_DIR to a folder that has them.")
    return folder


@pytest.fixture(autouse=True)
def _no_download(monkeypatch):
    """Tests never reach the network: they read the real files through DISTILL_DATA_DIR. Tests
    that need no data (loss arithmetic, recipes) run without the files."""
    monkeypatch.setenv("DISTILL_DATA_DIR", str(mnist_folder()))


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache-home")


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch, _session_cache):
    """What distill keeps between commands (decoded folders) goes to a folder of the test session:
    the tests' temporary folders would otherwise pile up in the user's ~/.cache/distill."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(_session_cache))


QUICK = ["--epochs", "1", "--train-batches", "3", "--val-batches", "1", "--test-images", "200",
         "--no-progress"]


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory, data_dir):
    """A teacher trained for three steps: weights and a report to feed other commands."""
    from distill.cli import main

    out = tmp_path_factory.mktemp("runs") / "teacher"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILL_DATA_DIR", str(data_dir))
        main(["teacher", "--out", str(out), *QUICK])
    return out
