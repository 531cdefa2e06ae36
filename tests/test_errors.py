"""Bad input ends in a short message and a non-zero exit, never a traceback."""

import gzip
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from distill.cli import main
from distill.data import load_split, read_idx
from distill.datasets import get_dataset
from distill.errors import DistillError
from distill.export import load_model, save_weights
from distill.nets import DigitNet

TEST_FILES = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


@pytest.fixture
def copied_test_split(data_dir, tmp_path):
    for name in TEST_FILES:
        shutil.copy(data_dir / name, tmp_path / name)
    return tmp_path


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    out = capsys.readouterr()
    return exit_.value.code, out.out + out.err


def test_a_folder_that_does_not_exist_names_it_and_the_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("distill.datasets.idx.download_idx", lambda dataset, folder: None)
    code, out = run_cli(["teacher", "--data-dir", str(tmp_path / "nowhere"), "--out",
                         str(tmp_path / "run"), "--no-progress"], capsys)
    assert code == 1
    assert "nowhere" in out and "train-images-idx3-ubyte" in out and "Traceback" not in out


def test_no_network_for_the_download_is_a_clear_error(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens there
    with pytest.raises(DistillError, match="Could not download") as error:
        load_split("train", tmp_path / "empty")
    assert "--data-dir" in str(error.value)


def test_a_corrupt_gzip_stream_is_a_clear_error(copied_test_split):
    path = copied_test_split / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(DistillError, match="not a readable gzip file|sha256"):
        read_idx(path)


def test_a_wrong_magic_number_is_a_clear_error(copied_test_split):
    path = copied_test_split / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[3] = 0x99
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DistillError, match="magic number"):
        read_idx(path)


def test_image_and_label_counts_that_disagree_are_a_clear_error(copied_test_split):
    path = copied_test_split / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    shortened = raw[:4] + (9_999).to_bytes(4, "big") + raw[8:-1]
    path.write_bytes(gzip.compress(bytes(shortened)))
    with pytest.raises(DistillError, match="10000 images and 9999 labels"):
        load_split("test", copied_test_split, download=False)
    assert get_dataset("mnist").counts["test"] == 10_000


def test_a_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(DistillError, match="No weights"):
        load_model(tmp_path / "weights.safetensors")


def test_an_empty_or_corrupt_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"")
    with pytest.raises(DistillError, match="not a readable safetensors file"):
        load_model(path)
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(DistillError, match="not a readable safetensors file"):
        load_model(path)


def test_weights_of_another_size_are_explained_in_a_sentence(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_weights(DigitNet(dims=(8, 8, 8, 8)), "digitnet", {}, path)
    # The file claims the default digitnet, but holds the weights of a narrower one.
    with pytest.raises(DistillError, match="do not fit a digitnet: .* of another shape"):
        load_model(path)


def test_weights_not_written_by_distill_are_refused(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(DistillError, match="not written by distill"):
        load_model(path)
    assert load_file(str(path))


def test_debug_shows_the_traceback(tmp_path, capsys):
    with pytest.raises(DistillError):
        main(["--debug", "student", "--teacher", str(tmp_path / "none"), "--runs", str(tmp_path)])


def test_a_misspelt_recipe_key_from_the_cli_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("network: convnet_tiny\ndistillation: {temprature: 2}\n")
    code, out = run_cli(["student", "--recipe", str(recipe), "--runs", str(tmp_path)], capsys)
    # Rich wraps the line where the temporary folder's name makes it long: compare the words.
    assert code == 1 and "Did you mean 'distillation.temperature'?" in " ".join(out.split())
    assert "Traceback" not in out


def test_an_image_size_for_mnist_is_refused_not_ignored(tmp_path, capsys):
    # MNIST comes at 28x28: --image-size 32 trained at 28 without a word.
    code, out = run_cli(["teacher", "--image-size", "32", "--out", str(tmp_path / "run"),
                         "--no-progress"], capsys)
    assert code == 1 and "mnist's images are 28x28: a size of 32 (--image-size)" in out
    assert not (tmp_path / "run").exists()


def test_distills_own_warnings_are_one_line_without_its_source():
    """A folder's unreadable files are skipped with a warning: the user reads one line, not the
    file, line and source of the call that Python shows a programmer."""
    import warnings

    from distill import cli
    from distill.datasets import folder

    before = warnings.formatwarning
    try:
        cli.plain_warnings()
        cli.plain_warnings()  # each command installs it: once is enough
        said = "2 files are not readable images and were skipped in /photos (/photos/a/x.png, ...)."
        assert warnings.formatwarning(said, UserWarning, folder.__file__, 105) == f"Warning: {said}\n"
        assert "UserWarning" in warnings.formatwarning("another library's", UserWarning,
                                                       warnings.__file__, 1)
    finally:
        warnings.formatwarning = before


def test_ctrl_c_outside_training_says_so_in_one_line(data_dir, tmp_path, capsys, monkeypatch):
    """Typer turns a Ctrl-C into exit code 130 without a word (here, while a folder decodes)."""
    from distill.datasets import folder

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(folder, "decode_entries", interrupted)
    for name in ("a", "b"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "photos" / name / f"{i}.png").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_:
        main(["teacher", "--dataset", str(tmp_path / "photos"), "--out", str(tmp_path / "t")])
    out = capsys.readouterr().out
    assert exit_.value.code == 130 and "Interrupted. Nothing finished was overwritten." in out
    assert "Traceback" not in out and not (tmp_path / "t").exists()
