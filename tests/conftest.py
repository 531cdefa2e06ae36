import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST files: $DISTILL_DATA_DIR, else ../shared/data/mnist beside the repo."""
    folder = Path(os.environ.get("DISTILL_DATA_DIR") or SHARED_MNIST)
    if not (folder / "train-images-idx3-ubyte.gz").exists() and not (
            folder / "train-images-idx3-ubyte").exists():
        pytest.fail(f"The tests need the real MNIST files: none in {folder}. "
                    "Set DISTILL_DATA_DIR to a folder that has them.")
    return folder


@pytest.fixture(autouse=True)
def _no_download(monkeypatch, data_dir):
    """Tests never reach the network: they read the real files through DISTILL_DATA_DIR."""
    monkeypatch.setenv("DISTILL_DATA_DIR", str(data_dir))
