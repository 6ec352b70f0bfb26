"""intersphinx inventories that a build without network does without.

Sphinx warns when an inventory cannot be fetched, which ``-W`` turns into a failed
build. Here each inventory is fetched once into a cache folder; a project whose
inventory is neither cached nor reachable is left out of the mapping (its
cross-links render as plain text) with a message on the console, not a warning.
"""

from __future__ import annotations

import os
import pathlib
import urllib.error
import urllib.request

TIMEOUT_S = 10


def fetch(url: str, path: pathlib.Path) -> bool:
    """Download ``url`` to ``path`` unless it is there; whether ``path`` exists."""
    if path.exists():
        return True
    if os.environ.get("BORCH_DOCS_OFFLINE"):
        return False
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as error:
        print(f"intersphinx: no inventory from {url} ({error}); links left out")
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


def mapping(projects: dict[str, str], cache: pathlib.Path) -> dict:
    """``intersphinx_mapping`` for the ``projects`` (name: documentation URL) whose
    inventory is cached in ``cache`` or can be fetched into it now."""
    found = {}
    for name, url in projects.items():
        path = cache / f"{name}.inv"
        if fetch(url + "objects.inv", path):
            found[name] = (url, str(path))
    return found
