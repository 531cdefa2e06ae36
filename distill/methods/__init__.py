"""Distillation methods, by name: how a student learns from its teachers.

A recipe names one in `distillation.method`, with that method's own parameters. Adding a method
is one file defining a `Method` subclass and one line in `METHODS` (see docs/extending.md).
"""

from __future__ import annotations

from distill.methods.base import Method, Outputs
from distill.methods.dkd import DKD
from distill.methods.fitnet import FitNet
from distill.methods.function_matching import FunctionMatching
from distill.methods.kd import KD

METHODS: dict[str, type[Method]] = {m.name: m for m in (KD, DKD, FunctionMatching, FitNet)}

__all__ = ["METHODS", "Method", "Outputs"]
