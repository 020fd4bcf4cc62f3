"""Guards on the shape of the code: the public surface, module docstrings, module size, and
an import of loopline that does no work."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import loopline

SRC = Path(loopline.__file__).parent
MAX_MODULE_LINES = 800


def test_public_surface_is_exactly_the_exported_names() -> None:
    def defined_here(name: str) -> bool:
        module = str(getattr(getattr(loopline, name), "__module__", ""))
        return module.startswith("loopline")

    ours = sorted(n for n in dir(loopline) if not n.startswith("_") and defined_here(n))
    assert sorted(loopline.__all__) == loopline.__all__, "__all__ stays sorted"
    assert ours == [n for n in loopline.__all__ if n != "__version__"]
    assert all(hasattr(loopline, name) for name in loopline.__all__)


def test_every_module_opens_with_a_docstring() -> None:
    missing = [str(path.relative_to(SRC)) for path in SRC.rglob("*.py")
               if "versions" not in path.parts and ast.get_docstring(
                   ast.parse(path.read_text())) is None]
    assert missing == []


def test_no_module_is_a_god_module() -> None:
    too_long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
                if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert too_long == {}


def test_importing_loopline_opens_nothing_and_reads_no_settings(tmp_path: Path) -> None:
    probe = (
        "import os, sys, sqlalchemy\n"
        "reads = []\n"
        "class Spy(dict):\n"
        "    def get(self, key, default=None):\n"
        "        if key.startswith('LOOPLINE'): reads.append(key)\n"
        "        return super().get(key, default)\n"
        "    def __getitem__(self, key):\n"
        "        if key.startswith('LOOPLINE'): reads.append(key)\n"
        "        return super().__getitem__(key)\n"
        "os.environ = Spy(os.environ)\n"
        "def refuse(*a, **k): raise AssertionError('an engine was created at import time')\n"
        "sqlalchemy.create_engine = refuse\n"
        "import loopline, loopline.cli.main\n"
        "assert reads == [], reads\n"
        "assert 'psycopg' not in sys.modules, 'the PostgreSQL driver loads only when used'\n"
        "assert not any(p.name.startswith('.loopline') for p in __import__('pathlib')"
        ".Path('.').iterdir())\n"
    )
    subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, check=True, timeout=60)
