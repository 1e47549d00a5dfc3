"""MkDocs hooks: links that work both in the repository and on the site.

The guides link to files outside ``docs/`` with paths that work when the Markdown is read in
the repository: ``../experiments/results/NAME.md`` (and the figures beside it) and
``../BENCHMARKS.md``. These hooks publish every file of ``experiments/results/`` under
``experiments/results/`` on the site and point the links there; ``../BENCHMARKS.md`` becomes
the Benchmarks page, which includes that file.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files, InclusionLevel
from mkdocs.structure.pages import Page

_RESULTS = "experiments/results"
_LINKS = {"](../" + _RESULTS + "/": "](" + _RESULTS + "/", "](../BENCHMARKS.md": "](benchmarks.md"}


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    root = Path(config.config_file_path).parent / _RESULTS
    for path in sorted(root.iterdir()):
        if path.is_file() and path.suffix in {".md", ".png"}:
            files.append(
                File.generated(
                    config,
                    f"{_RESULTS}/{path.name}",
                    abs_src_path=str(path),
                    inclusion=InclusionLevel.NOT_IN_NAV,
                )
            )
    return files


def on_page_markdown(markdown: str, *, page: Page, **kwargs: object) -> str:
    if "/" not in page.file.src_uri:  # a top-level page, docs/NAME.md
        for repository, site in _LINKS.items():
            markdown = markdown.replace(repository, site)
    return markdown
