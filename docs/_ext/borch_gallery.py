"""The tutorial gallery: which scripts of ``examples/`` are pages, in what order, with
which arguments, and the seed tutorial's page.

Every ``examples/*.py`` that starts with a title docstring is a tutorial: the build
links it into ``docs/_gallery_src`` (git-ignored, rebuilt at every build) and
sphinx-gallery executes it, printing its output and figures under each cell. Adding a
script to ``examples/`` is all it takes to add a page.

``examples/posteriors.py`` is the seed tutorial, kept byte-identical to the original
project's script, so it has no docstring or text cells of its own. Its page is
assembled from the seed document's prose (``docs/seed/posteriors.txt``) and the
script's lines, cut into cells where the prose quotes the start of the next cell
(``.. code cell: TEXT``, ``\\n`` for a line break);
the cells put together are the script verbatim (checked here at every build).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import time

# Pages in this order; scripts not named here follow, alphabetically, before LAST.
ORDER = (
    "primitives.py",
    "posteriors.py",
    "bnn_digits.py",
    "borchify_trained.py",
    "vae_digits.py",
    "correlated_regression.py",
    "eight_schools.py",
    "logistic_regression.py",
    "mcmc_model_comparison.py",
    "laplace_regression.py",
    "heteroscedastic_laplace.py",
    "diabetes_regression.py",
)
# Shown but not executed: these need several processes (``torchrun``).
NOT_EXECUTED = ("ddp_bnn.py",)
LAST = NOT_EXECUTED
EXECUTED = "^(?!.*(" + "|".join(re.escape(name) for name in NOT_EXECUTED) + ")$).*$"

# The documentation build's shorter settings; each tutorial's text says what they
# shorten. Everything else runs with the script's defaults.
DOCS_ARGUMENTS = {
    "bnn_digits.py": ["--epochs", "20", "--draws", "50"],
    "eight_schools.py": ["--no-progress"],
    "logistic_regression.py": ["--no-progress"],
}

SEED_SCRIPT = "posteriors.py"
SEED_PROSE = "seed/posteriors.txt"
CELL_MARK = re.compile(r"^\.\. code cell: (.*)\n", re.MULTILINE)


def prepare_sources(docs: pathlib.Path) -> pathlib.Path:
    """Fill ``docs/_gallery_src`` with links to the example scripts, the gallery's
    header and the seed tutorial's assembled script; returns the folder."""
    examples = docs.parent / "examples"
    folder = docs / "_gallery_src"
    folder.mkdir(exist_ok=True)
    wanted = {"GALLERY_HEADER.rst": docs / "gallery_header.rst"}
    for script in sorted(examples.glob("*.py")):
        if script.name != SEED_SCRIPT:
            wanted[script.name] = script
    for entry in folder.iterdir():
        if entry.is_symlink() and entry.name not in wanted:
            entry.unlink()
    for name, target in wanted.items():
        link = folder / name
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(target, folder))
    seed = seed_script(
        (docs / SEED_PROSE).read_text(), (examples / SEED_SCRIPT).read_text()
    )
    path = folder / SEED_SCRIPT
    if not path.exists() or path.read_text() != seed:
        path.write_text(seed)
    return folder


def seed_cells(prose: str, code: str) -> tuple[str, list[tuple[str, str]]]:
    """Split the seed page into its opening prose and (code cell, prose after it)
    pairs. Raises ``ValueError`` unless the cells put together are ``code``."""
    parts = CELL_MARK.split(prose)
    opening, marks, texts = parts[0], parts[1::2], parts[2::2]
    lines = code.splitlines(keepends=True)
    starts = []
    for mark in marks:
        start = mark.replace("\\n", "\n")
        found = [i for i in range(len(lines)) if "".join(lines[i:]).startswith(start)]
        if len(found) != 1:
            raise ValueError(
                f"code cell mark {mark!r} matches {len(found)} lines of the seed "
                "script; expected exactly one"
            )
        starts.append(found[0])
    if not starts or starts[0] != 0 or starts != sorted(starts):
        raise ValueError(
            f"code cell marks start at lines {starts}; expected increasing line "
            "numbers from 0 (the script's first line)"
        )
    cells = ["".join(lines[a:b]) for a, b in zip(starts, [*starts[1:], len(lines)])]
    if "".join(cells) != code:
        raise ValueError("the seed page's code cells do not make up the script")
    return opening, list(zip(cells, texts))


def _comment(text: str) -> str:
    return "".join(
        f"# {line}".rstrip() + "\n" for line in text.strip("\n").splitlines()
    )


def seed_script(prose: str, code: str) -> str:
    """The sphinx-gallery script of the seed page: ``prose`` as the title docstring
    and text cells, ``code`` verbatim as the code cells."""
    opening, cells = seed_cells(prose, code)
    script = '"""\n' + opening.strip("\n") + '\n"""\n\n'
    for cell, text in cells:
        script += cell
        if text.strip():
            script += "\n# %%\n" + _comment(text) + "\n"
    return script


class TutorialOrder:
    """sphinx-gallery sort key: :data:`ORDER`, then the rest, then :data:`LAST`."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __repr__(self) -> str:
        return "TutorialOrder"

    def __call__(self, filename) -> tuple[int, int, str]:
        name = pathlib.Path(filename).name
        if name in LAST:
            return (2, 0, name)
        if name in ORDER:
            return (0, ORDER.index(name), name)
        return (1, 0, name)


def docs_arguments(gallery_conf, script_vars) -> list[str]:
    """Command-line arguments of a tutorial in the documentation build."""
    return list(DOCS_ARGUMENTS.get(pathlib.Path(script_vars["src_file"]).name, []))


def seed_torch(gallery_conf, fname) -> None:
    """Seed torch before each tutorial so that the pages are reproducible."""
    import torch

    torch.manual_seed(0)


_last_scrape = time.time()


def results_scraper(block, block_vars, gallery_conf) -> str:
    """Show the PNGs that a cell wrote into ``results/`` (the examples save their
    figures there and close them, so matplotlib's scraper does not see them)."""
    global _last_scrape
    from sphinx_gallery.scrapers import figure_rst

    folder = pathlib.Path(block_vars["src_file"]).parent / "results"
    new = sorted(
        (path for path in folder.glob("*.png") if path.stat().st_mtime >= _last_scrape),
        key=lambda path: path.stat().st_mtime,
    )
    _last_scrape = time.time()
    images = []
    for path, image_path in zip(new, block_vars["image_path_iterator"]):
        shutil.copyfile(path, image_path)
        images.append(image_path)
    return figure_rst(images, gallery_conf["src_dir"])
