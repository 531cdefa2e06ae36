import re

import pytest

from distill.data import Augment
from distill.errors import DistillError
from distill.recipes import available_recipes, load_recipe, parse_recipe
from distill.training import TrainConfig

VALID = """
network: convnet_tiny
distillation: {temperature: 4, alpha: 0.9}
schedule: {epochs: 5}
"""


def parse(text):
    return parse_recipe(text, "test", "test.yaml")


def test_every_shipped_recipe_parses_into_a_train_config():
    assert {"micro", "tiny", "small", "mlp"} <= set(available_recipes())
    for name in available_recipes():
        recipe = load_recipe(name)
        assert recipe.name == name
        assert isinstance(recipe.train_config(), TrainConfig)


def test_a_valid_recipe_fills_defaults_and_converts_ints_to_floats():
    recipe = parse(VALID)
    params = recipe.distillation.params
    assert recipe.distillation.method == "kd"
    assert params.temperature == 4.0 and isinstance(params.temperature, float)
    assert recipe.schedule.epochs == 5 and recipe.optimizer.name == "adamw"
    assert recipe.optimizer.ema_decay is None and recipe.train_config().ema_decay is None
    with_ema = parse(VALID + "optimizer: {ema_decay: 0.99}\n")
    assert with_ema.train_config().ema_decay == 0.99
    assert not recipe.train_config().augment.random_magnitude
    magnitude = parse(VALID + "augmentation: {degrees: 30, random_magnitude: true}\n")
    assert magnitude.train_config().augment == Augment(30.0, 0.1, 0.1, random_magnitude=True)


@pytest.mark.parametrize("text, message", [
    (VALID + "distilation: {}\n", "Did you mean 'distillation'"),
    ("network: convnet_tiny\ndistillation: {temprature: 2}\n", "Did you mean 'distillation.temperature'"),
    ("network: convnet_tiny\nschedule: {epochs: ten}\n", "'schedule.epochs' must be int"),
    ("network: convnet_tiny\ndistillation: {temperature: 0}\n", "greater than 0"),
    ("network: convnet_tiny\ndistillation: {alpha: 1.5}\n", "between 0 and 1"),
    ("network: convnet_tiny\nschedule: {epochs: 0}\n", "between 1 and 1000"),
    ("network: convnet_tiny\noptimizer: {ema_decay: 1.0}\n", "'optimizer.ema_decay' is 1.0"),
    ("network: convnet_tiny\noptimizer: {ema_decay: high}\n", "'optimizer.ema_decay' must be float"),
    ("network: convnet_tiny\naugmentation: {random_magnitude: 1}\n",
     "'augmentation.random_magnitude' must be bool"),
    ("network: convnet_tiny\nschedule: {epochs: true}\n", "'schedule.epochs' must be int"),
    ("network: resnet50\n", "one of distill's networks: digitnet, digitnet_small"),
    ("network: convnet_tiny\ndistillation: [1, 2\n", "line 3"),
    ("distillation: {alpha: 0.5}\n", "missing key 'network'"),
    ("network: convnet_tiny\ndistillation: {method: dkdd}\n", "Did you mean 'dkd'"),
    ("network: convnet_tiny\ndistillation: {beta: 8}\n",
     "'distillation.beta' is not a parameter of method kd (it is a parameter of dkd)"),
    ("network: convnet_tiny\ndistillation: {method: dkd, beta: -1}\n",
     "'distillation.beta' is -1.0"),
    ("network: convnet_tiny\ndistillation: {method: function_matching, alpha: 0.5}\n",
     "not a parameter of method function_matching"),
    ("network: convnet_tiny\nteachers: runs/teacher\n", "'teachers' must be a list"),
    ("network: convnet_tiny\nnetwork_options: {chanels: [8, 8]}\n",
     "'chanels' is not an argument of convnet_tiny (did you mean 'channels'?); it takes channels, "
     "convs_per_stage, separable, residual, global_pool."),
    ("network: convnet_tiny\nnetwork_options: {num_classes: 3}\n",
     "'network_options.num_classes' is set by the dataset"),
    ("network: mlp_800\nnetwork_options: {hidden: [100000000]}\n", "out of bounds"),
    ("network: mlp_800\nnetwork_options: {hidden: [4096, 4096, 4096, 4096, 4096, 4096]}\n",
     "over distill's limit"),
    ("network: convnet_tiny\nnetwork_options: {global_pool: median}\n",
     "convnet_tiny cannot be built with these arguments"),
    ("network: convnet_tiny\nnetwork_options: [8, 16]\n",
     "'network_options' must be a mapping of names to values"),
    ("network: convnet_tiny\naugmentation: {cutmix: 0.5}\n",
     "'augmentation.cutmix' is for a teacher trained on every label"),
    ("network: digitnet\nrole: teacher\naugmentation: {cutmix: 2}\n",
     "'augmentation.cutmix' is 2.0; it must be between 0 and 1"),
])
def test_a_bad_recipe_is_an_error_that_names_the_key(text, message):
    with pytest.raises(DistillError, match=re.escape(message)):
        parse(text)


def test_an_unknown_recipe_name_lists_the_available_ones():
    with pytest.raises(DistillError, match="Available: .*tiny"):
        load_recipe("tinny")


def test_each_method_reads_its_own_parameters():
    recipe = parse("network: convnet_tiny\ndistillation: {method: dkd, beta: 2, warmup: 0.5}\n")
    assert recipe.distillation.method == "dkd"
    assert recipe.distillation.params.beta == 2.0 and recipe.distillation.params.alpha == 1.0
    assert recipe.distillation.describe() == {"method": "dkd", "temperature": 4.0, "alpha": 1.0,
                                              "beta": 2.0, "ce_weight": 1.0, "warmup": 0.5}
    teachers = parse("network: digitnet\nteachers: [a, b]\n")
    assert teachers.teachers == ("a", "b") and teachers.network == "digitnet"


def test_the_teacher_recipe_gives_the_teachers_settings():
    from distill.datasets import get_dataset

    teacher = load_recipe("teacher")
    assert teacher.role == "teacher"
    config = teacher.train_config()
    assert config == TrainConfig(model="digitnet", epochs=10, batch_size=128, lr=4e-3,
                                 weight_decay=0.05, patience=3, seed=0, views=2,
                                 augment=get_dataset("mnist").teacher_augment)
    assert teacher.train_config(augment_strength=0).augment is None
    assert teacher.train_config(augment_strength=0).views == 1


def test_the_fashion_mnist_release_is_its_recipe_then_warm_restarts_of_it():
    import json

    from distill.files import MODELS_DIR
    from distill.training import describe, normalized

    from .conftest import REPO

    first = load_recipe("teacher-fashion-mnist")
    assert first.role == "teacher" and first.dataset == "fashion-mnist"
    # Each warm restart is the first recipe run again, shorter and on a seed of its own.
    restarts = {}
    for seed, name in enumerate(("teacher-fashion-mnist-restart",
                                 "teacher-fashion-mnist-restart-2"), start=1):
        restarts[name] = load_recipe(str(REPO / "docs" / "experiments" / f"{name}.yaml"))
        again = {**describe(first.train_config()), "epochs": 120, "patience": 120, "seed": seed}
        assert describe(restarts[name].train_config()) == again
    # The release was trained by one of them from trained weights (its card names them).
    released = json.loads((MODELS_DIR / "digitnet.fashion_mnist" / "report.json").read_text())
    assert released["recipe"] in restarts and released["init_sha256"]
    assert (describe(restarts[released["recipe"]].train_config())
            == {**normalized(released["config"]), "init": None})


@pytest.mark.parametrize(("shipped", "measured"), [
    ("tiny-fashion-mnist", "tiny-fashion-mnist-t1"),  # +0.28 [+0.06, +0.50]
    ("micro-fashion-mnist", "micro-fashion-mnist"),
    ("small-fashion-mnist", "small-fashion-mnist"),
])
def test_a_fashion_mnist_recipe_has_the_settings_its_figures_were_measured_with(shipped, measured):
    """README and results.md quote each shipped recipe's gain: the runs of the experiment's file."""
    import dataclasses

    from .conftest import REPO

    shipped = load_recipe(shipped)
    measured = load_recipe(str(REPO / "docs" / "experiments" / f"{measured}.yaml"))
    assert shipped.dataset == "fashion-mnist" and shipped.augmentation is None
    assert dataclasses.replace(measured, name=shipped.name,
                               description=shipped.description) == shipped


def test_student_is_the_older_name_of_network():
    assert parse("student: convnet_tiny\n").network == "convnet_tiny"
