"""distill: train a strong MNIST teacher, distill it into tiny students, and measure what they keep.

`import distill` registers distill's networks with timm, so that `timm.create_model("digitnet")`
works. It stays cheap (the command line starts without torch): when timm is not imported yet,
the networks are registered the moment it is.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"


def _register_networks() -> None:
    import distill.nets  # noqa: F401 - @register_model runs on import


class _RegisterAfterTimm(importlib.abc.MetaPathFinder):
    """Finds timm as the other finders do, and registers distill's networks once it has loaded."""

    def find_spec(self, name, path, target=None):  # noqa: ANN001 - importlib's protocol
        if name != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def load_then_register(module) -> None:  # noqa: ANN001
            load(module)
            _register_networks()

        spec.loader.exec_module = load_then_register
        return spec


if "timm" in sys.modules:
    _register_networks()
elif not any(isinstance(finder, _RegisterAfterTimm) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterTimm())
