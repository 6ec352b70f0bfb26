"""The documentation's generated sources: the API pages cover every ``__all__`` and
the seed tutorial's page is the seed script verbatim."""

import importlib
import pathlib
import sys

import pytest

pytest.importorskip("sphinx")

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
api_pages = importlib.import_module("api_pages")
borch_gallery = importlib.import_module("borch_gallery")


@pytest.mark.parametrize("package", api_pages.all_packages())
def test_every_public_name_is_on_its_package_page(package):
    packages = api_pages.all_packages()
    page = api_pages.page(package, packages)
    listed = {name for names in api_pages.sections(package).values() for name in names}
    assert listed == set(api_pages.public_names(package))
    for name, section, home in api_pages.entries(package, packages):
        if section == "Modules":
            entry = f":mod:`{home}`"
        elif section == "Data":
            entry = f".. py:data:: {name}\n"
        elif home == package:
            entry = f"\n   {name}\n"
        else:
            entry = f".{name}\n"
        assert entry in page, f"{package}.{name} is not on its page"


def test_a_name_exported_twice_has_one_home():
    packages = api_pages.all_packages()
    assert api_pages.owner("borch.infer", "NUTS", packages) == "borch.infer.hmc"
    assert api_pages.owner("borch.nn", "Module", packages) == "borch"
    assert api_pages.owner("borch", "plate", packages) == "borch.handlers"


def test_seed_page_cells_are_the_script_verbatim():
    prose = (DOCS / borch_gallery.SEED_PROSE).read_text()
    code = (DOCS.parent / "examples" / borch_gallery.SEED_SCRIPT).read_text()
    opening, cells = borch_gallery.seed_cells(prose, code)
    assert opening.startswith("Posteriors\n==========\n")
    assert "".join(cell for cell, _ in cells) == code
    assert len(cells) == 7


def test_seed_marks_that_do_not_match_are_rejected():
    code = "a = 1\nb = 2\n"
    with pytest.raises(ValueError, match="matches 0 lines"):
        borch_gallery.seed_cells("Title\n\n.. code cell: c = 3\n", code)
    with pytest.raises(ValueError, match="from 0"):
        borch_gallery.seed_cells("Title\n\n.. code cell: b = 2\n", code)


def test_every_example_has_a_title_docstring():
    for script in sorted((DOCS.parent / "examples").glob("*.py")):
        if script.name == borch_gallery.SEED_SCRIPT:
            continue
        lines = script.read_text().splitlines()
        title = lines[0].removeprefix('"""')
        assert lines[0].startswith('"""') and title, script.name
        assert lines[1] == "=" * len(title), f"{script.name}: no title underline"
