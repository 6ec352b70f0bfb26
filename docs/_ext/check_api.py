"""Check a built site against the packages: every name of every documented
``__all__`` has its page, and its package's page links to it.

Usage: ``python docs/_ext/check_api.py docs/_build/html`` (``make docs`` runs it).
"""

from __future__ import annotations

import pathlib
import sys

import api_pages


def missing(html: pathlib.Path) -> list[str]:
    """The public names without a page (or without a link from their package's)."""
    problems = []
    packages = api_pages.all_packages()
    for package in packages:
        page = html / "api" / f"{package}.html"
        if not page.exists():
            problems.append(f"{package}: no page {page}")
            continue
        text = page.read_text()
        for name, section, home in api_pages.entries(package, packages):
            if section == "Modules":
                target = f"{home}.html"
            elif section == "Data":
                target = f"#{package}.{name}"
            else:
                target = f"generated/{home}.{name}.html"
                if not (html / "api" / target).exists():
                    problems.append(f"{package}.{name}: no page {target}")
            if f'href="{target}' not in text:
                problems.append(f"{package}.{name}: {page.name} has no link to it")
    return problems


def main(argv: list[str]) -> int:
    html = pathlib.Path(argv[1] if len(argv) > 1 else "docs/_build/html")
    problems = missing(html)
    for problem in problems:
        print(problem)
    count = sum(len(api_pages.public_names(p)) for p in api_pages.all_packages())
    print(f"API pages: {count} public names, {len(problems)} missing")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
