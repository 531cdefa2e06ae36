import pytest

from distill.data import Augment
from distill.errors import DistillError
from distill.recipes import available_recipes, load_recipe, parse_recipe
from distill.training import TrainConfig

VALID = """
student: convnet_tiny
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
    ("student: convnet_tiny\ndistillation: {temprature: 2}\n", "Did you mean 'distillation.temperature'"),
    ("student: convnet_tiny\nschedule: {epochs: ten}\n", "'schedule.epochs' must be int"),
    ("student: convnet_tiny\ndistillation: {temperature: 0}\n", "greater than 0"),
    ("student: convnet_tiny\ndistillation: {alpha: 1.5}\n", "between 0 and 1"),
    ("student: convnet_tiny\nschedule: {epochs: 0}\n", "between 1 and 1000"),
    ("student: convnet_tiny\noptimizer: {ema_decay: 1.0}\n", "'optimizer.ema_decay' is 1.0"),
    ("student: convnet_tiny\noptimizer: {ema_decay: high}\n", "'optimizer.ema_decay' must be float"),
    ("student: convnet_tiny\naugmentation: {random_magnitude: 1}\n",
     "'augmentation.random_magnitude' must be bool"),
    ("student: convnet_tiny\nschedule: {epochs: true}\n", "'schedule.epochs' must be int"),
    ("student: resnet50\n", "one of distill's networks: digitnet, digitnet_small"),
    ("student: convnet_tiny\ndistillation: [1, 2\n", "line 3"),
    ("distillation: {alpha: 0.5}\n", "missing key 'student'"),
    ("student: convnet_tiny\ndistillation: {method: dkdd}\n", "Did you mean 'dkd'"),
    ("student: convnet_tiny\ndistillation: {beta: 8}\n",
     "'distillation.beta' is not a parameter of method kd (it is a parameter of dkd)"),
    ("student: convnet_tiny\ndistillation: {method: dkd, beta: -1}\n",
     "'distillation.beta' is -1.0"),
    ("student: convnet_tiny\ndistillation: {method: function_matching, alpha: 0.5}\n",
     "not a parameter of method function_matching"),
    ("student: convnet_tiny\nteachers: runs/teacher\n", "'teachers' must be a list"),
])
def test_a_bad_recipe_is_an_error_that_names_the_key(text, message):
    with pytest.raises(DistillError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


def test_an_unknown_recipe_name_lists_the_available_ones():
    with pytest.raises(DistillError, match="Available: .*tiny"):
        load_recipe("tinny")


def test_each_method_reads_its_own_parameters():
    recipe = parse("student: convnet_tiny\ndistillation: {method: dkd, beta: 2, warmup: 0.5}\n")
    assert recipe.distillation.method == "dkd"
    assert recipe.distillation.params.beta == 2.0 and recipe.distillation.params.alpha == 1.0
    assert recipe.distillation.describe() == {"method": "dkd", "temperature": 4.0, "alpha": 1.0,
                                              "beta": 2.0, "ce_weight": 1.0, "warmup": 0.5}
    teachers = parse("student: digitnet\nteachers: [a, b]\n")
    assert teachers.teachers == ("a", "b") and teachers.student == "digitnet"
