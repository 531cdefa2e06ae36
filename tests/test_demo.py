"""The demo in a real browser: Chromium driven by Playwright, drawing with the mouse.

The browser is found the way users have one (see `find_chromium`). Without one these tests are
skipped with the commands that install one, except under CI, where a missing browser fails them.
"""

import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from distill.datasets import get_dataset
from distill.demo import EMPTY_CANVAS, EMPTY_PICTURE, classify, load_demo_models, released_model_paths
from distill.errors import DistillError
from distill.files import MODELS_DIR

INSTALL_HINT = ("no Chromium found: `playwright install chromium` (Playwright's own) or "
                "`apt-get install chromium` (the system's), or set DISTILL_CHROMIUM to a browser")
# As the machine's probe starts it: no sandbox as root, nothing that reaches the network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def playwright_chromium() -> Path | None:
    """Where `playwright install chromium` put its browser, if it did."""
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            path = Path(p.chromium.executable_path)
    except Exception:  # noqa: BLE001 - no Playwright or no driver: look for the system's browser
        return None
    return path if path.is_file() else None


def find_chromium() -> Path | None:
    """$DISTILL_CHROMIUM, else Playwright's own Chromium, else the system's on PATH."""
    if os.environ.get("DISTILL_CHROMIUM"):
        return Path(os.environ["DISTILL_CHROMIUM"])
    if found := playwright_chromium():
        return found
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return Path(found)
    return None


@pytest.fixture(scope="module")
def chromium() -> Path:
    path = find_chromium()
    if path is None or not path.is_file():
        reason = INSTALL_HINT if path is None else f"DISTILL_CHROMIUM names no file: {path}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}. Under CI the browser tests must run, not skip.")
        pytest.skip(reason)
    return path


def serve_demo(*args: str, env: dict[str, str]):
    """`distill demo ARGS` on a free port, once it answers: (url, server)."""
    port = free_port()
    env = {**os.environ, **env, "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "-m", "distill", "demo", "--port", str(port), *args],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return url, server
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"distill demo exited: {server.stdout.read()}")
            time.sleep(1)
    server.kill()
    pytest.fail("distill demo did not answer within 120 s")


@pytest.fixture(scope="module")
def demo_url(data_dir, chromium):
    assert released_model_paths(), "the demo test needs the released models in models/"
    url, server = serve_demo(env={"DISTILL_DATA_DIR": str(data_dir)})
    yield url
    server.terminate()
    server.wait(timeout=30)


def open_page(p, url: str, chromium: Path):
    browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url, wait_until="networkidle")
    return browser, page


@pytest.fixture
def page(demo_url, chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = open_page(p, demo_url, chromium)
        yield page
        browser.close()


def draw(page, points) -> None:
    """Press the mouse at the first point, move through the rest, release; fractions of the canvas."""
    page.locator("#sketch button[aria-label='Brush']").click()  # no tool is selected at first
    box = page.locator("#sketch canvas").last.bounding_box()
    at = [(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy) for fx, fy in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=2)
    page.mouse.up()


def answers(page) -> list[str]:
    page.locator("#classify").click()
    return shown_answers(page)


def shown_answers(page) -> list[str]:
    # 90 s: beside two training runs on two cores, one first answer took longer than 30 s.
    page.wait_for_function("document.querySelector('#status').innerText.includes('most likely')",
                           timeout=90_000)
    # The labels are drawn after the status line: on a busy machine one was read still showing
    # its heading where its top class goes.
    page.wait_for_function("[...document.querySelectorAll(\"[id^='label-']\")].every(label => {"
                           "const lines = label.innerText.split('\\n').map(s => s.trim());"
                           "return lines.length > 1 && lines[1] !== lines[0]; })", timeout=90_000)
    labels = page.locator("[id^='label-']")
    return [labels.nth(i).inner_text() for i in range(labels.count())]


def top_class(label_text: str) -> str:
    # A gr.Label shows its heading (the model), then the top class in large type.
    return label_text.split("\n")[1].strip()


def test_an_empty_canvas_asks_for_a_drawing(page):
    page.locator("#classify").click()
    page.wait_for_timeout(2000)
    assert EMPTY_CANVAS in page.locator("#status").inner_text()


def test_a_vertical_stroke_is_a_one_for_the_teacher(page):
    draw(page, [(0.5, 0.15 + 0.7 * i / 20) for i in range(21)])
    shown = answers(page)
    assert len(shown) == len(released_model_paths())
    assert top_class(shown[0]) == "1"
    assert all(top_class(text).isdigit() for text in shown)


def test_a_closed_loop_is_a_zero_for_the_teacher(page):
    loop = [(0.5 + 0.22 * math.sin(t / 40 * 2 * math.pi), 0.5 - 0.33 * math.cos(t / 40 * 2 * math.pi))
            for t in range(42)]
    draw(page, loop)
    shown = answers(page)
    assert top_class(shown[0]) == "0"
    assert all(top_class(text).isdigit() for text in shown)
    # The README's screenshot: DISTILL_SCREENSHOT=assets/demo.png pytest tests/test_demo.py
    if screenshot := os.environ.get("DISTILL_SCREENSHOT"):
        page.screenshot(path=screenshot, full_page=True)


def ankle_boot_photo(fashion_dir: Path):
    """Fashion-MNIST's first test image, an ankle boot, as a photo: larger, dark on white, off
    centre on a page of another shape."""
    from PIL import Image

    from distill.data import load_split

    images, labels = load_split("test", fashion_dir, download=False, dataset="fashion-mnist")
    assert get_dataset("fashion-mnist").classes[int(labels[0])] == "Ankle boot"
    photo = Image.new("L", (220, 180), 255)
    photo.paste(Image.fromarray(255 - images[0].numpy()).resize((140, 140), Image.BICUBIC), (50, 20))
    return photo


def test_the_fashion_demo_answers_a_photo_in_class_names(fashion_dir):
    """No browser needed: what the page shows for an uploaded photo of a test ankle boot, dark on
    white, comes from `classify`."""
    import numpy as np

    models, dataset = load_demo_models(dataset="fashion-mnist")
    assert [m.parent.name for m in released_model_paths("fashion-mnist")][0] == "digitnet.fashion_mnist"
    assert len(models) == len(released_model_paths("fashion-mnist")) >= 3
    photo = ankle_boot_photo(fashion_dir)
    status, answers, costs = classify(models, dataset, np.asarray(photo.convert("RGBA")),
                                      is_photo=True)
    assert status.startswith("Each model's three most likely classes") and "inverted" in status
    assert set(answers[0]) == set(dataset.classes)
    assert max(answers[0], key=answers[0].get) == "Ankle boot"
    assert classify(models, dataset, None)[0] == EMPTY_PICTURE


def test_an_uploaded_file_is_read_as_distill_predict_reads_it(fashion_dir, tmp_path):
    """The upload comes as its file, read by `predict.load_image`: a phone's sideways JPEG with
    its orientation tag is read upright, and a file that is no image is a line."""
    from PIL import ExifTags, Image

    models, dataset = load_demo_models(dataset="fashion-mnist")
    sideways = tmp_path / "boot.jpg"
    exif = Image.new("L", (1, 1)).getexif()
    exif[ExifTags.Base.Orientation] = 6  # shown turned 90 degrees clockwise
    ankle_boot_photo(fashion_dir).transpose(Image.Transpose.ROTATE_90).save(sideways, exif=exif)
    status, answers, _ = classify(models, dataset, str(sideways), is_photo=True)
    assert max(answers[0], key=answers[0].get) == "Ankle boot", status
    # A phone's 24-megapixel photo (5712x4284), once over distill's limit, is read.
    camera = tmp_path / "camera.jpg"
    ankle_boot_photo(fashion_dir).resize((5712, 4284), Image.BICUBIC).save(camera, quality=90)
    status, answers, _ = classify(models, dataset, str(camera), is_photo=True)
    assert max(answers[0], key=answers[0].get) == "Ankle boot", status
    (tmp_path / "notes.jpg").write_text("not a picture")
    status, answers, _ = classify(models, dataset, str(tmp_path / "notes.jpg"), is_photo=True)
    assert "is not an image that can be read" in status and answers == [None] * len(models)


def test_models_of_two_datasets_are_one_line():
    with pytest.raises(DistillError, match="different datasets"):
        load_demo_models([MODELS_DIR / "convnet_tiny", MODELS_DIR / "convnet_tiny.fashion_mnist"])
    with pytest.raises(DistillError, match="trained on mnist, not fashion-mnist"):
        load_demo_models([MODELS_DIR / "convnet_tiny"], "fashion-mnist")
    with pytest.raises(DistillError, match="Did you mean 'fashion-mnist'"):
        load_demo_models(dataset="fashion-mnsit")


def test_each_start_writes_its_examples_to_the_same_folder(data_dir, tmp_path, monkeypatch):
    # A demo closed with its terminal runs no exit handlers: a new folder each start piled up.
    from PIL import Image

    from distill.demo import example_images

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    first = example_images(get_dataset("mnist"), data_dir=data_dir)
    assert example_images(get_dataset("mnist"), data_dir=data_dir) == first and len(first) == 8
    assert [p.name for p in tmp_path.iterdir()] == [Path(first[0]).parent.name]
    assert sorted(p.name for p in Path(first[0]).parent.iterdir()) == [f"test-{i}.png" for i in range(8)]
    assert Image.open(first[0]).size == (112, 112)
    # A link put in its place by someone else is not written through.
    shutil.rmtree(Path(first[0]).parent)
    (tmp_path / "theirs").mkdir()
    Path(first[0]).parent.symlink_to(tmp_path / "theirs")
    assert Path(example_images(get_dataset("mnist"), data_dir=data_dir)[0]).parent != Path(
        first[0]).parent and not list((tmp_path / "theirs").iterdir())


def test_the_fashion_demo_names_an_uploaded_garment(fashion_dir, chromium, tmp_path):
    """In the browser: `distill demo --dataset fashion-mnist`, a photo of a test ankle boot
    (dark on white) uploaded; every released Fashion-MNIST model answers with class names."""
    from playwright.sync_api import sync_playwright

    ankle_boot_photo(fashion_dir).save(tmp_path / "boot.jpg")
    url, server = serve_demo("--dataset", "fashion-mnist",
                             env={"DISTILL_FASHION_MNIST_DIR": str(fashion_dir)})
    try:
        with sync_playwright() as p:
            browser, page = open_page(p, url, chromium)
            assert EMPTY_PICTURE in page.locator("#status").inner_text()
            page.locator("#upload input[type='file']").set_input_files(str(tmp_path / "boot.jpg"))
            shown = shown_answers(page)
            if screenshot := os.environ.get("DISTILL_FASHION_SCREENSHOT"):
                page.screenshot(path=screenshot, full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert len(shown) == len(released_model_paths("fashion-mnist"))
    assert top_class(shown[0]) == "Ankle boot"
    assert all(top_class(text) in get_dataset("fashion-mnist").classes for text in shown)
