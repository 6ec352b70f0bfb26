"""Write the API reference's source pages: one per public (sub)package, listing its
``__all__``.

The pages are generated at every build (``docs/api`` is git-ignored), so a name added
to a package's ``__all__`` appears in the reference without editing the docs; a
module named in an ``__all__`` gets a page of its own. autosummary then writes a stub
page per name.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import sys
import types

from sphinx.pycode import ModuleAnalyzer, PycodeError

# The packages with a page even where no parent's ``__all__`` names them.
PACKAGES = (
    "borch",
    "borch.distributions",
    "borch.posterior",
    "borch.nn",
    "borch.infer",
    "borch.infer.variational",
    "borch.infer.hmc",
    "borch.infer.laplace",
    "borch.infer.prediction",
    "borch.handlers",
    "borch.metrics",
    "borch.plots",
    "borch.distributed",
)

SECTIONS = ("Modules", "Classes", "Exceptions", "Functions", "Data")


def kind(value: object) -> str:
    """The section of the page that lists ``value``."""
    if isinstance(value, types.ModuleType):
        return "Modules"
    if inspect.isclass(value):
        if issubclass(value, BaseException):
            return "Exceptions"
        return "Classes"
    if callable(value):
        return "Functions"
    return "Data"


def public_names(package: str) -> list[str]:
    """The names of ``package.__all__``, which every package here defines."""
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None)
    if names is None:
        raise ValueError(f"package {package!r} has no __all__ to document")
    return list(names)


def sections(package: str) -> dict[str, list[str]]:
    """The names of ``package.__all__`` grouped by :data:`SECTIONS`, in order."""
    module = importlib.import_module(package)
    grouped: dict[str, list[str]] = {section: [] for section in SECTIONS}
    for name in public_names(package):
        grouped[kind(getattr(module, name))].append(name)
    return grouped


def all_packages(roots=PACKAGES) -> list[str]:
    """``roots`` and every module that a documented ``__all__`` names, in order."""
    found: list[str] = []
    pending = list(roots)
    while pending:
        package = pending.pop(0)
        if package in found:
            continue
        found.append(package)
        for name in sections(package)["Modules"]:
            pending.append(f"{package}.{name}")
    return found


def owner(package: str, name: str, packages: list[str]) -> str:
    """The package whose page documents ``package.name``: of the ``packages`` that
    export the same object, the one nearest the module that defines it (so
    ``borch.infer.NUTS`` is documented as ``borch.infer.hmc.NUTS`` and
    ``borch.nn.Module`` as ``borch.Module``). Data is documented where it is listed."""
    value = getattr(importlib.import_module(package), name)
    if kind(value) == "Data":
        return package
    defined = getattr(value, "__module__", None) or ""
    exporters = [
        candidate
        for candidate in packages
        if getattr(importlib.import_module(candidate), name, None) is value
        and name in public_names(candidate)
    ]
    nearest = [c for c in exporters if defined == c or defined.startswith(c + ".")]
    return max(nearest, key=len) if nearest else exporters[0]


def entries(package: str, packages: list[str]) -> list[tuple[str, str, str]]:
    """``(name, section, home)`` for every name of ``package.__all__``: ``home`` is
    the package whose page documents it (:func:`owner`; the module itself for
    modules)."""
    found = []
    for section, names in sections(package).items():
        for name in names:
            if section == "Modules":
                home = f"{package}.{name}"
            else:
                home = owner(package, name, packages)
            found.append((name, section, home))
    return found


def data_doc(package: str, name: str) -> str:
    """The ``#:`` comment of the data ``package.name`` where its value is defined."""
    value = getattr(importlib.import_module(package), name)
    for module_name, module in sorted(sys.modules.items()):
        if (
            not module_name.startswith(package)
            or getattr(module, name, None) is not value
        ):
            continue
        try:
            docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
        except PycodeError:
            continue
        if ("", name) in docs:
            return "\n".join(docs[("", name)]).strip()
    raise ValueError(
        f"{package}.{name} is public data without a #: comment where it is defined"
    )


def _relative(module: str, package: str) -> str:
    """``module`` as autosummary wants it on ``package``'s page."""
    prefix = package + "."
    return module[len(prefix) :] if module.startswith(prefix) else module


def page(package: str, packages: list[str]) -> str:
    """The reStructuredText of ``package``'s page."""
    lines = [package, "=" * len(package), "", f".. automodule:: {package}", ""]
    lines += [f".. currentmodule:: {package}", ""]
    for section, names in sections(package).items():
        if not names:
            continue
        lines += [section, "-" * len(section), ""]
        if section == "Modules":
            lines += [f"* :mod:`{package}.{name}`" for name in names] + [""]
            continue
        if section == "Data":
            for name in names:
                doc = data_doc(package, name).replace("\n", "\n   ")
                lines += [f".. py:data:: {name}", "", f"   {doc}", ""]
            continue
        own = [n for n in names if owner(package, n, packages) == package]
        other = [n for n in names if n not in own]
        if own:
            lines += [
                ".. autosummary::",
                "   :toctree: generated",
                "   :nosignatures:",
                "",
            ]
            lines += [f"   {name}" for name in own] + [""]
        if other:
            lines += [".. autosummary::", "   :nosignatures:", ""]
            lines += [
                f"   ~{_relative(owner(package, n, packages), package)}.{n}"
                for n in other
            ]
            lines += [""]
    return "\n".join(lines)


def index(packages: list[str]) -> str:
    title = "API reference"
    lines = [title, "=" * len(title), ""]
    lines += [
        "Every public name of borch, one page per package: the names of its",
        "``__all__``, each with its docstring and examples.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
    ]
    lines += [f"   {package}" for package in packages]
    return "\n".join(lines) + "\n"


def _write_if_changed(path: pathlib.Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def write(folder: pathlib.Path, roots=PACKAGES) -> list[str]:
    """Write ``index.rst`` and a page per package into ``folder``; returns the
    packages."""
    folder.mkdir(parents=True, exist_ok=True)
    packages = all_packages(roots)
    _write_if_changed(folder / "index.rst", index(packages))
    stubs = set()
    for package in packages:
        _write_if_changed(folder / f"{package}.rst", page(package, packages))
        for section, names in sections(package).items():
            if section not in ("Modules", "Data"):
                stubs |= {
                    f"{package}.{n}.rst"
                    for n in names
                    if owner(package, n, packages) == package
                }
    for stale in (folder / "generated").glob("*.rst"):  # of names no longer public
        if stale.name not in stubs:
            stale.unlink()
    return packages
