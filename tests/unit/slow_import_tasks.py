"""A task module that takes a second to import, like one that loads a large library."""

from __future__ import annotations

import time

IMPORT_SECONDS = 1.0

time.sleep(IMPORT_SECONDS)


def quick() -> str:
    return "done"
