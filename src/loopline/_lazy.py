"""Names a package exports but imports only on first use (PEP 562 module ``__getattr__``).

So ``import loopline`` (and a worker process importing one engine module) does not pay for
pandas, SQLAlchemy and the rest until a name that needs them is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str], namespace: dict[str, Any],
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return a package's ``__getattr__`` and ``__dir__`` for ``names`` (name -> module).

    A name is imported from its module on first access and then kept in ``namespace`` (the
    package's globals), so later lookups are ordinary attribute reads.
    """
    def get(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def listing() -> list[str]:
        return sorted(set(namespace) | set(names))

    return get, listing
