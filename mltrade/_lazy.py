"""Module-level ``__getattr__`` for package faces whose names pull in heavy imports (TensorFlow, Selenium)."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Tuple


def lazy_names(package: str, namespace: dict, names: Dict[str, str]) -> Tuple[Callable[[str], Any],
                                                                             Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` resolving each of ``names`` (name -> module) on first use."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value   # later lookups skip __getattr__
        return value

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
