import json
import shutil
import subprocess
import sys

import pytest
import timm
import torch
import yaml

from distill.cli import main
from distill.export import load_model
from distill.files import MODELS_DIR


def test_publish_writes_weights_and_a_model_card(teacher_run, tmp_path, capsys):
    target = tmp_path / "models" / "digitnet"
    main(["publish", str(teacher_run), str(target), "--assets", str(tmp_path / "assets")])
    card = (target / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "mit" and front["pipeline_tag"] == "image-classification"
    assert front["datasets"] == ["ylecun/mnist"]
    top1 = json.loads((teacher_run / "report.json").read_text())["evaluation"]["test"]["top1"]
    metrics = front["model-index"][0]["results"][0]["metrics"]
    assert metrics[0]["value"] == pytest.approx(top1, abs=1e-4)
    for name in ("weights.safetensors", "curves.png", "confusion.png", "examples.png"):
        assert (target / name).is_file()
    assert (tmp_path / "assets" / "cm.png").is_file()
    report = json.loads((teacher_run / "report.json").read_text())
    assert "distill teacher" in card and f"at commit {report['environment']['git_commit']}" in card
    # A run's own CPU speed depends on what else ran then; the card says so, and how to compare.
    assert "CPU speed as measured when training ended, on cpu" in card
    assert "`distill report models` measures every release again" in card


def test_the_card_of_a_student_of_several_teachers_says_it_learned_from_their_mean(
        teacher_run, tmp_path, monkeypatch):
    run = tmp_path / "student-self-ens"
    shutil.copytree(teacher_run, run)
    report = json.loads((run / "report.json").read_text())
    report.update(kind="student", recipe="self", teacher="runs/a, runs/b",
                  teacher_sha256="1" * 64 + ", " + "2" * 64)
    report["evaluation"]["teacher_agreement"] = 0.99
    report["gain_over_twin"] = 0.0062
    (run / "report.json").write_text(json.dumps(report))
    main(["publish", str(run), str(tmp_path / "models" / "digitnet")])
    card = (tmp_path / "models" / "digitnet" / "README.md").read_text()
    assert "a student distilled from the mean of 2 teachers' logits (an ensemble)" in card
    assert "Agrees with their mean on 99.00% of the test images." in card
    # one seed's difference from its twin is stated as such, not as what distillation buys
    assert "(its twin): +0.62 points of test top-1 on this seed;" in card
    # Released outside distill's models/, the card links to nothing that is not beside it.
    assert ("on this seed; `distill student --recipe self --seeds 0-4`, then `distill report`, "
            "measure what distillation buys over seeds." in card)
    assert "made with distill." in card and "../../" not in card
    monkeypatch.setattr("distill.publish.MODELS_DIR", tmp_path / "models")  # as distill's own
    main(["publish", str(run), str(tmp_path / "models" / "digitnet"), "--overwrite"])
    card = (tmp_path / "models" / "digitnet" / "README.md").read_text()
    assert "made with [distill](../../README.md)." in card
    assert "over seeds is in [docs/results.md](../../docs/results.md)." in card


def test_publish_refuses_a_folder_named_after_another_network(teacher_run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["publish", str(teacher_run), str(tmp_path / "convnet_tiny")])
    assert "models/digitnet" in capsys.readouterr().out


def test_published_weights_load_through_timm(teacher_run, tmp_path):
    target = tmp_path / "digitnet"
    main(["publish", str(teacher_run), str(target)])
    model = timm.create_model("digitnet", pretrained=True, pretrained_cfg_overlay={
        "file": str(target / "weights.safetensors")}).eval()
    reference, _ = load_model(teacher_run)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), reference(x))




@pytest.mark.parametrize("name", [p.parent.name for p in MODELS_DIR.glob("*/weights.safetensors")])
def test_every_released_model_loads_by_name_through_timm(name):
    model = timm.create_model(name, pretrained=True).eval()
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.parametrize("name", ["digitnet", "convnet_tiny", "convnet_tiny.fashion_mnist"])
def test_the_model_cards_python_snippet_runs_as_written(name):
    card = (MODELS_DIR / name / "README.md").read_text()
    assert f"\n# {name}\n" in card  # the title is the name timm loads it by
    snippet = card.split("```python\n")[1].split("```")[0]
    code = snippet + "print(model(torch.zeros(1, 1, 28, 28)).shape)\n"
    done = subprocess.run([sys.executable, "-c", "import torch\n" + code], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "torch.Size([1, 10])"


def test_every_release_card_is_what_publish_writes_today():
    """A card edited by hand, or left behind by an older publish, shows here: re-render it with
    `distill publish models/NAME models/NAME --overwrite` (weights and images are unchanged)."""
    from distill.publish import model_card
    from distill.report import load_report

    releases = sorted(p.parent for p in MODELS_DIR.glob("*/report.json"))
    assert releases
    stale = [r.name for r in releases if (r / "README.md").read_text() != model_card(load_report(r))]
    assert stale == []
    card = (MODELS_DIR / "digitnet.fashion_mnist" / "README.md").read_text()
    assert "fits a photo of one object" in card
