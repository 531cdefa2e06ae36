"""Recipes: YAML files that say how a student is distilled, parsed once into typed objects.

Every key is checked: an unknown key is an error that suggests the closest valid one, a wrong
type or an out-of-range value names its key, and an unknown student lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.bounds import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_LR,
    MAX_RECIPE_BYTES,
    MAX_SEED,
)
from distill.data import Augment
from distill.datasets import dataset_name, get_dataset
from distill.errors import DistillError
from distill.files import package_data
from distill.methods import METHODS, Method
from distill.methods.kd import KDParams
from distill.nets import NETWORKS, arguments_problem
from distill.training import TrainConfig

RECIPES_DIR = package_data("recipes")
OPTIMIZERS = ("adamw", "adam", "sgd")


@dataclass(frozen=True)
class Distillation:
    """method: how the student learns from its teachers, a name in `distill.methods.METHODS`;
    params: that method's own parameters (its `Params` dataclass), given beside `method` in the
    recipe's `distillation` section."""

    method: str = "kd"
    params: Any = field(default_factory=KDParams)

    def build(self, seed: int) -> Method:
        return METHODS[self.method](self.params, seed)

    def describe(self) -> dict[str, Any]:
        """As a report records it: the method's name and its parameters."""
        return {"method": self.method, **dataclasses.asdict(self.params)}


@dataclass(frozen=True)
class Optimizer:
    """ema_decay: keep an exponential moving average of the weights (validated, selected and
    saved in place of the raw weights); none when absent."""

    name: str = "adamw"
    lr: float = 0.01
    weight_decay: float = 0.0005
    ema_decay: float | None = None


@dataclass(frozen=True)
class Schedule:
    """epochs: at most this many; warmup: fraction of steps rising to lr, then cosine decay;
    patience: epochs without a better validation loss before stopping early."""

    epochs: int = 10
    warmup: float = 0.1
    patience: int = 3


@dataclass(frozen=True)
class Augmentation:
    """Rotation up to `degrees`, shift up to `translate` and zoom up to `scale`, drawn per image;
    random_magnitude: scale each image's ranges by a uniform draw of its own, so that most
    images change a little and a few span the full ranges (as the teacher is trained)."""

    degrees: float = 15.0
    translate: float = 0.1
    scale: float = 0.1
    random_magnitude: bool = False
    hflip: bool = False  # mirror half the images left to right
    erasing: float = 0.0  # the share of images with a random rectangle painted over (clothes)
    # A teacher's: the share of images with a rectangle of another pasted in (CutMix), the
    # label mixed by area. Not a student's: its teacher's logits are of the images unmixed.
    cutmix: float = 0.0


@dataclass(frozen=True)
class Data:
    """The transfer set (`distill.transfer`). labeled_fraction: the share of the images (of each
    class, drawn from the seed) whose labels the student and its twin may use; the student learns
    from the teacher on every image, the twin from the labeled ones alone; 0: no label at all,
    and no twin. exclude_classes: classes whose images neither of them ever sees."""

    labeled_fraction: float = 1.0
    exclude_classes: tuple[int, ...] = ()


ROLES = ("student", "teacher")


@dataclass(frozen=True)
class Recipe:
    """How one network is trained: a student distilled from teachers, or (role: teacher) a
    teacher trained on labels, by `distill teacher`.

    network: a name in distill's networks (`distill.nets.NETWORKS`).
    network_options: arguments of that network's constructor that change it (widths, depths,
        stochastic depth), e.g. `{channels: [8, 16, 24]}` for convnet_tiny; the dataset sets its
        classes, channels and image size.
    views: augmented copies of each image in a step (batch augmentation), for a teacher.
    """

    network: str
    network_options: dict = field(default_factory=dict)
    description: str = ""
    role: str = "student"
    distillation: Distillation = field(default_factory=Distillation)
    optimizer: Optimizer = field(default_factory=Optimizer)
    schedule: Schedule = field(default_factory=Schedule)
    # None: the dataset's default augmentation (e.g. flips for clothes, none for digits).
    augmentation: Augmentation | None = None
    data: Data = field(default_factory=Data)
    views: int = 1
    batch_size: int = 128
    seed: int = 0
    # Teacher run folders or weights files; several distill from the mean of their logits.
    # Empty: the command's --teacher, else its default teacher.
    teachers: tuple[str, ...] = ()
    # A name in distill.datasets (mnist, fashion-mnist) or a folder of class subfolders.
    dataset: str = "mnist"
    image_size: int = 28  # a folder's images are decoded at this size
    name: str = field(default="", metadata={"set_from": "file name"})

    def train_config(self, augment_strength: float = 1.0) -> TrainConfig:
        """The run's settings. No augmentation section: the dataset's (its teacher augmentation
        for a teacher); `augment_strength` scales it (0: none)."""
        a, dataset = self.augmentation, get_dataset(self.dataset, self.image_size)
        augment = ((dataset.teacher_augment if self.role == "teacher" else dataset.augment)
                   if a is None else
                   Augment(**dataclasses.asdict(a)))
        augment = augment.scaled(augment_strength) if augment_strength else None
        return TrainConfig(model=self.network, model_kwargs=dict(self.network_options),
                           epochs=self.schedule.epochs, views=self.views
                           if augment else 1,
                           batch_size=self.batch_size, optimizer=self.optimizer.name,
                           lr=self.optimizer.lr, weight_decay=self.optimizer.weight_decay,
                           warmup=self.schedule.warmup, patience=self.schedule.patience,
                           augment=augment, seed=self.seed, dataset=self.dataset,
                           image_size=self.image_size,
                           ema_decay=self.optimizer.ema_decay,
                           labeled_fraction=self.data.labeled_fraction,
                           exclude_classes=list(self.data.exclude_classes))


# (key path, check, what the value must be)
RANGES = [
    ("optimizer.lr", lambda v: 0 < v <= MAX_LR, f"greater than 0 and at most {MAX_LR:g}"),
    ("optimizer.weight_decay", lambda v: 0 <= v <= 1, "between 0 and 1"),
    ("optimizer.ema_decay", lambda v: v is None or 0 < v < 1, "between 0 and 1"),
    ("optimizer.name", lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    ("schedule.epochs", lambda v: 1 <= v <= MAX_EPOCHS, f"between 1 and {MAX_EPOCHS}"),
    ("schedule.warmup", lambda v: 0 < v < 1, "between 0 and 1 (a fraction of the steps)"),
    ("schedule.patience", lambda v: 1 <= v <= MAX_EPOCHS, f"between 1 and {MAX_EPOCHS}"),
    ("augmentation.degrees", lambda v: 0 <= v <= 180, "between 0 and 180"),
    ("augmentation.translate", lambda v: 0 <= v <= 0.5, "between 0 and 0.5"),
    ("augmentation.scale", lambda v: 0 <= v < 1, "between 0 and 1"),
    ("augmentation.erasing", lambda v: 0 <= v <= 1, "between 0 and 1 (a share of the images)"),
    ("augmentation.cutmix", lambda v: 0 <= v <= 1, "between 0 and 1 (a share of the images)"),
    ("data.labeled_fraction", lambda v: 0 <= v <= 1, "between 0 and 1"),
    ("data.exclude_classes", lambda v: len(set(v)) == len(v) and all(0 <= c < 1000 for c in v),
     "a list of distinct class indices (0 for the first class)"),
    ("batch_size", lambda v: 1 <= v <= MAX_BATCH, f"between 1 and {MAX_BATCH:,}"),
    ("image_size", lambda v: 8 <= v <= 256, "between 8 and 256"),
    ("seed", lambda v: 0 <= v <= MAX_SEED, f"between 0 and {MAX_SEED}"),
    ("network", lambda v: v in NETWORKS, f"one of distill's networks: {', '.join(NETWORKS)}"),
    ("role", lambda v: v in ROLES, f"one of {', '.join(ROLES)}"),
    ("views", lambda v: 1 <= v <= 8, "between 1 and 8"),
]


def _build(cls: type, data: Any, where: str, source: str) -> Any:
    """A dataclass from a mapping, every key and type checked."""
    prefix = f"{where}." if where else ""
    if not isinstance(data, dict):
        raise DistillError(f"{source}: {where or 'the recipe'} must be a mapping of keys to values, "
                           f"not {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if "set_from" not in f.metadata}
    values = {}
    for key, value in data.items():
        if key not in fields:
            key = shown(key) if not isinstance(key, str) else key[:60]
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else \
                f" Valid keys: {', '.join(fields)}."
            raise DistillError(f"{source}: unknown key '{prefix}{key}'.{hint}")
        kind = hints[key]
        if isinstance(kind, types.UnionType):  # an optional section: `X | None`
            kind = next(k for k in typing.get_args(kind) if k is not type(None))
        if kind is dict and not isinstance(value, dict):
            raise DistillError(f"{source}: '{prefix}{key}' must be a mapping of names to values, "
                               f"not {shown(value)}.")
        if kind is Distillation:
            values[key] = _build_distillation(value, source)
        elif dataclasses.is_dataclass(kind):
            values[key] = _build(kind, value, f"{prefix}{key}", source)
        else:
            values[key] = _check_type(value, kind, f"{prefix}{key}", source)
    missing = [k for k, f in fields.items() if k not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise DistillError(f"{source}: missing key '{prefix}{missing[0]}'.")
    return cls(**values)


def _build_distillation(data: Any, source: str) -> Distillation:
    """The method named by `method` (default kd), its own parameters checked: one given to the
    wrong method names the methods that take it."""
    if not isinstance(data, dict):
        raise DistillError(f"{source}: distillation must be a mapping of keys to values, not "
                           f"{type(data).__name__}.")
    method = data.get("method", "kd")
    if not isinstance(method, str) or method not in METHODS:
        close = difflib.get_close_matches(str(method)[:60], METHODS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DistillError(f"{source}: unknown method {shown(method)}.{hint} Methods: "
                           f"{', '.join(METHODS)}.")
    cls = METHODS[method]
    takes = [f.name for f in dataclasses.fields(cls.Params)]
    params = {key: value for key, value in data.items() if key != "method"}
    for key in params:
        if key not in takes:
            owners = [name for name, other in METHODS.items()
                      if key in {f.name for f in dataclasses.fields(other.Params)}]
            close = difflib.get_close_matches(str(key)[:60], takes, n=1)
            whose = (f" (it is a parameter of {', '.join(owners)})." if owners else
                     f". Did you mean 'distillation.{close[0]}'?" if close else ".")
            raise DistillError(f"{source}: 'distillation.{str(key)[:60]}' is not a parameter of "
                               f"method {method}{whose} {method} takes: {', '.join(takes)}.")
    built = _build(cls.Params, params, "distillation", source)
    for name, check, must in cls.ranges:
        value = getattr(built, name)
        if not check(value):
            raise DistillError(f"{source}: 'distillation.{name}' is {shown(value)}; it must be "
                               f"{must}.")
    return Distillation(method, built)


def _check_type(value: Any, kind: Any, key: str, source: str) -> Any:
    if typing.get_origin(kind) is tuple:  # a list in YAML, of one type
        item = typing.get_args(kind)[0]
        if not isinstance(value, list):
            raise DistillError(f"{source}: '{key}' must be a list, not {shown(value)}.")
        return tuple(_check_type(v, item, key, source) for v in value)
    if isinstance(kind, types.UnionType):
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    # bool is a subclass of int, but `epochs: true` is a mistake, not 1.
    ok = (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))) or (
        kind is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise DistillError(f"{source}: '{key}' must be {kind.__name__}, not {shown(value)}.")
    return kind(value)


def shown(value: Any) -> str:
    """A value as a message may print it: short, whatever it is (a YAML alias bomb expands to
    billions of items in a plain repr)."""
    return reprlib.repr(value)


def _lookup(recipe: Recipe, path: str) -> Any:
    value = recipe
    for part in path.split("."):
        value = getattr(value, part) if value is not None else None
    return value


def parse_recipe(text: str, name: str, source: str) -> Recipe:
    if len(text) > MAX_RECIPE_BYTES:
        raise DistillError(f"{source} is {len(text):,} characters long: a recipe is a few lines "
                           "of YAML.")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise DistillError(f"{source}: invalid YAML{where}: {problem}.") from error
    data = data if data is not None else {}
    if isinstance(data, dict) and "student" in data and "network" not in data:
        # `student:` is what recipes called `network:` before teachers had recipes too.
        data = {("network" if key == "student" else key): value for key, value in data.items()}
    recipe = _build(Recipe, data, "", source)
    for path, check, must in RANGES:
        value = _lookup(recipe, path)
        if value is None and path.startswith("augmentation."):
            continue  # no augmentation section: the dataset's
        if not check(value):
            raise DistillError(f"{source}: '{path}' is {shown(value)}; it must be {must}.")
    if recipe.augmentation and recipe.augmentation.cutmix and (
            recipe.role != "teacher" or recipe.data.labeled_fraction < 1):
        raise DistillError(f"{source}: 'augmentation.cutmix' is for a teacher trained on every "
                           "label (role: teacher): a student learns its teacher's answers on "
                           "unmixed images. Remove it.")
    _check_network_options(recipe, source)
    return dataclasses.replace(recipe, name=name)


DATASET_ARGUMENTS = ("num_classes", "in_chans", "img_size")  # the dataset's, not a recipe's


def _check_network_options(recipe: Recipe, source: str) -> None:
    for key in recipe.network_options:
        if key in DATASET_ARGUMENTS:
            raise DistillError(f"{source}: 'network_options.{key}' is set by the dataset, not by "
                               "a recipe: remove it.")
    if problem := arguments_problem(recipe.network, recipe.network_options, DATASET_ARGUMENTS):
        raise DistillError(f"{source}: network_options: {problem}.")


def overridden(recipe: Recipe, *, epochs: int | None = None, batch_size: int | None = None,
               lr: float | None = None, patience: int | None = None, seed: int | None = None,
               views: int | None = None, dataset: str | None = None,
               image_size: int | None = None) -> Recipe:
    """The recipe with what a command line gives; None keeps the recipe's value. Another batch
    size scales the learning rate with it (the same rate per image); another dataset brings
    that dataset's augmentation."""
    optimizer, schedule = recipe.optimizer, recipe.schedule
    lr = optimizer.lr if lr is None else lr
    if batch_size is not None:
        lr = lr * batch_size / recipe.batch_size
    changes: dict[str, Any] = {
        "optimizer": dataclasses.replace(optimizer, lr=lr),
        "schedule": dataclasses.replace(
            schedule, epochs=schedule.epochs if epochs is None else epochs,
            patience=schedule.patience if patience is None else patience)}
    for name, value in (("batch_size", batch_size), ("seed", seed), ("views", views)):
        if value is not None:
            changes[name] = value
    if dataset is not None or image_size is not None:
        named = dataset_name(dataset or recipe.dataset, image_size or recipe.image_size)
        changes.update(dataset=named, image_size=image_size or recipe.image_size,
                       augmentation=recipe.augmentation if named == recipe.dataset else None)
    return dataclasses.replace(recipe, **changes)


def available_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"), key=lambda p: p.stem)}


def recipe_for(name: str, dataset: str | None) -> str:
    """The recipe a command trains when none is named: the dataset's own version of `name` where
    it has one (`teacher-fashion-mnist`: clothes need ten times MNIST's epochs;
    `tiny-fashion-mnist`: tiny's MNIST settings trail its twin there), else `name`."""
    own = f"{name}-{dataset}"
    return own if dataset and own in available_recipes() else name


def load_recipe(name_or_path: str) -> Recipe:
    """A recipe by name (recipes/NAME.yaml) or by the path of a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return parse_recipe(read_recipe_text(path), path.stem, str(path))
    recipes = available_recipes()
    if name_or_path not in recipes:
        close = difflib.get_close_matches(name_or_path, recipes, n=1)
        hint = f"Did you mean '{close[0]}'? " if close else ""
        raise DistillError(f"Unknown recipe '{name_or_path}'. {hint}Available: "
                           f"{', '.join(recipes)} (or give the path of a YAML file).")
    path = recipes[name_or_path]
    return parse_recipe(read_recipe_text(path), name_or_path, f"recipes/{path.name}")


def read_recipe_text(path: Path) -> str:
    if not path.is_file():
        raise DistillError(f"No recipe file at {path}.")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise DistillError(f"{path} is {path.stat().st_size:,} bytes: a recipe is a few lines of "
                           "YAML. Check the path.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DistillError(f"{path} is not a text file (YAML): check the path.") from error
