"""Bounds on what a run may ask for, shared by the command line and the recipes (no torch import,
so the command starts fast): past them a value is a mistake or an attack, not a setting."""

MAX_EPOCHS = 1_000
MAX_BATCH = 55_000  # the training images: 60,000 less the validation slice
MAX_LR = 10.0
MAX_SEED = 2**32 - 1
MAX_RECIPE_BYTES = 100_000
