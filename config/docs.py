"""Print the configuration reference: ``python -m config.docs > docs/configuration.md``."""

from __future__ import annotations

import sys

from config._docs import render_markdown

__all__ = ["main", "render_markdown"]


def main() -> None:
    """Write the Markdown reference to standard output."""
    sys.stdout.write(render_markdown())


if __name__ == "__main__":
    main()
