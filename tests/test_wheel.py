"""`pip install .` gives a working tool: recipes and released models travel in the wheel."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh virtual environment with the wheel of this checkout; torch and the other
    dependencies come from the environment running the tests (a .pth file), not a download."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(REPO),
                    "-w", str(root / "dist")], check=True, capture_output=True)
    [wheel] = (root / "dist").glob("distill-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", str(wheel)], check=True, capture_output=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True)
    Path(site.stdout.strip(), "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv, root


def run(venv: Path, cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | (env or {})
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_wheel_holds_recipes_and_releases(installed):
    venv, root = installed
    out = run(venv, root, str(venv / "bin" / "python"), "-c",
              "import distill, distill.recipes as r, distill.nets as n; "
              "print(distill.__file__); print(sorted(r.available_recipes())); print(n.MODELS_DIR)")
    file, recipes, models = out.strip().split("\n")
    assert str(venv) in file and "tiny" in recipes and str(venv) in models


def test_the_installed_tool_lists_recipes_and_distills(installed, data_dir):
    venv, root = installed
    work = root / "elsewhere"
    work.mkdir()
    assert "convnet_tiny" in run(venv, work, str(venv / "bin" / "distill"), "recipes")
    out = run(venv, work, str(venv / "bin" / "distill"), "student", "--recipe", "tiny",
              "--no-twin", "--epochs", "1", "--train-batches", "2", "--val-batches", "1",
              "--test-images", "100", "--no-progress", "--data-dir", str(data_dir))
    assert "distilling the released teacher" in out and (work / "runs" / "student-tiny" /
                                                         "report.json").is_file()


def test_timm_loads_the_released_weights_after_import_distill(installed):
    venv, root = installed
    out = run(venv, root, str(venv / "bin" / "python"), "-c",
              "import timm, distill; m = timm.create_model('convnet_tiny', pretrained=True); "
              "print(sum(p.numel() for p in m.parameters()))")
    assert out.strip() == "9042"


def test_the_readmes_release_commands_work_from_a_folder_without_models(installed, data_dir,
                                                                        fashion_dir):
    """`models/convnet_tiny` names the release the wheel ships where no models/ folder is at
    hand; `models/*`, which a shell leaves as it is there, every shipped release."""
    venv, root = installed
    work = root / "a-users-folder"
    work.mkdir()
    digit = load_digit(data_dir)
    Image.fromarray(digit).save(work / "my-digit.png")
    distill = str(venv / "bin" / "distill")
    assert run(venv, work, distill, "predict", "models/convnet_tiny", "my-digit.png").startswith(
        "my-digit.png: 7 ")
    table = run(venv, work, distill, "evaluate", "models/*", "--teacher", "models/digitnet",
                "--test-images", "100", env={"DISTILL_DATA_DIR": str(data_dir),
                                             "DISTILL_FASHION_MNIST_DIR": str(fashion_dir),
                                             "COLUMNS": "250"})
    # Each row is named as it was asked for, not by its folder in site-packages.
    assert "│ models/convnet_micro " in table and "│ models/digitnet.fashion_mnist " in table
    assert str(venv) not in table
    assert not (work / "models").exists()


def load_digit(data_dir: Path):
    from distill.data import load_split

    images, labels = load_split("test", data_dir, download=False)
    assert labels[0] == 7
    return images[0].numpy()


def test_a_missing_extra_is_named_as_a_checkout_or_a_wheel_installs_it(tmp_path, monkeypatch):
    import distill.files

    assert distill.files.install_command("onnx") == 'pip install -e ".[onnx]"'  # this checkout
    (tmp_path / "models").mkdir()  # a wheel's layout: the releases inside the package
    monkeypatch.setattr(distill.files, "PACKAGE_ROOT", tmp_path)
    assert distill.files.install_command("onnx") == (
        'pip install "onnx>=1.16" "onnxscript>=0.2" "onnxruntime>=1.18"')
    assert distill.files.install_command("demo") == 'pip install "gradio>=5"'
