"""Package faces that load their names on first use (PEP 562), so ``import dermretr`` stays quick.

Examples
--------
>>> __getattr__, __dir__ = lazy_exports("json", {"dumps": ".decoder"}, {}, ["dumps"])
>>> callable(__getattr__), __dir__()
(True, ['dumps'])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: Mapping[str, str], namespace: dict[str, Any], names: Sequence[str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` of a package whose names ``where`` maps to the (relative) modules holding them.

    A name is imported from its module the first time it is read and then kept in the package's ``namespace``
    (its ``globals()``), so later reads cost nothing; ``names`` (the package's ``__all__``) show in ``dir()``.
    """

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(where[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
