"""Interface text: the Babel catalogues, the page's language, the browser's catalogue.

The catalogues are ``web/translations/<lang>/LC_MESSAGES/messages.po``, compiled to
``.mo`` at install (``pybabel compile -d web/translations``; ``make setup`` does it).
:func:`load` refuses to start without them (:class:`MissingCatalogues`), so a page is
never shown half in msgids. A request's language is the ``lang`` cookie if it names
one of :data:`LANGUAGES`, else the best of ``Accept-Language``, else ``[widget]
language``. The browser gets the same messages as JSON (``/i18n/<lang>.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from babel.support import Translations
from starlette.requests import Request

__all__ = [
    "LANGUAGES",
    "LANG_COOKIE",
    "TRANSLATIONS_DIR",
    "Catalogues",
    "MissingCatalogues",
    "load",
    "negotiate",
]

#: The languages the interface is written in; the first is the source language.
LANGUAGES = ("en", "fr")
LANG_COOKIE = "lang"
TRANSLATIONS_DIR = Path(__file__).parent / "translations"


class MissingCatalogues(RuntimeError):
    """The compiled catalogues (``.mo``) are not installed."""


@dataclass(frozen=True, slots=True)
class Catalogues:
    """The compiled catalogue of each language of :data:`LANGUAGES`."""

    translations: dict[str, Translations]

    def get(self, lang: str) -> Translations:
        return self.translations[lang]

    def browser(self, lang: str) -> dict[str, str]:
        """msgid → msgstr of ``lang`` (an untranslated message maps to itself)."""
        catalog = self.translations[lang]._catalog
        return {
            key: value or key
            for key, value in sorted(catalog.items(), key=lambda kv: str(kv[0]))
            if isinstance(key, str) and key
        }


def load(directory: Path = TRANSLATIONS_DIR) -> Catalogues:
    """Read the compiled catalogues; :class:`MissingCatalogues` names what is missing."""
    missing = [
        str(directory / lang / "LC_MESSAGES" / "messages.mo")
        for lang in LANGUAGES
        if not (directory / lang / "LC_MESSAGES" / "messages.mo").is_file()
    ]
    if missing:
        raise MissingCatalogues(
            "compiled translations missing: "
            + ", ".join(missing)
            + " (run `pybabel compile -d web/translations`, as `make setup` does)"
        )
    found: dict[str, Translations] = {}
    for lang in LANGUAGES:
        with (directory / lang / "LC_MESSAGES" / "messages.mo").open("rb") as f:
            found[lang] = Translations(f, domain="messages")
    return Catalogues(found)


def _accepted(header: str) -> list[str]:
    """The languages of an ``Accept-Language`` header, best first (q=0 left out)."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                continue
        if tag and q > 0:
            ranked.append((-q, index, tag.strip().lower()))
    return [tag for _, _, tag in sorted(ranked)]


def negotiate(request: Request, default: str) -> str:
    """The language of ``request``: the ``lang`` cookie, ``Accept-Language``, ``default``."""
    cookie = request.cookies.get(LANG_COOKIE, "")
    if cookie in LANGUAGES:
        return cookie
    for tag in _accepted(request.headers.get("accept-language", "")):
        primary = tag.split("-", 1)[0]
        if primary in LANGUAGES:
            return primary
    return default if default in LANGUAGES else LANGUAGES[0]
