"""The pages' language catalogs: `<lang>.po` files read with Babel, merged over `strings.py`.

English and Spanish are written in `caas.web.strings`; any other language is a gettext catalog
(`msgid` is the text's key, `msgstr` its text, `{name}` placeholders as in `strings.py`) in
`caas/web/locales/` or in the directory `CAAS_LOCALES_DIR` names, so a translator adds a
language by dropping a file there: it appears in the language switch at the next start, and
every text it leaves out falls back to English.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog
from babel import Locale, UnknownLocaleError
from babel.messages.pofile import read_po

from caas.web import strings

log = structlog.get_logger(__name__)

BUILT_IN_DIR = Path(__file__).parent / "locales"


@dataclass(frozen=True)
class Catalog:
    """One language's texts from its `.po` file."""

    language: str
    name: str
    texts: dict[str, str]


def read_catalog(path: Path) -> Catalog | None:
    """The catalog in `path` (named `<lang>.po`); None when Babel knows no such language,
    since its dates, numbers and money could not be written in it."""
    language = path.stem
    try:
        locale = Locale.parse(language)
    except (ValueError, UnknownLocaleError):
        log.warning("catalogs.unknown_language", path=str(path))
        return None
    with path.open("rb") as source:
        catalog = read_po(source, locale=locale)
    texts = {
        str(message.id): str(message.string)
        for message in catalog
        if message.id and isinstance(message.string, str) and message.string and not message.fuzzy
    }
    name = locale.get_display_name(locale) or language
    return Catalog(language=language, name=name[:1].upper() + name[1:], texts=texts)


def read_catalogs(*directories: Path | None) -> list[Catalog]:
    """Every catalog in `directories`, in order (a later directory's file wins)."""
    found: dict[str, Catalog] = {}
    for directory in directories:
        if directory is None or not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.po")):
            catalog = read_catalog(path)
            if catalog is not None:
                found[catalog.language] = catalog
    return list(found.values())


def install(extra_dir: Path | None = None) -> list[str]:
    """Merge the built-in catalogs and those of `extra_dir` over the texts of
    `caas.web.strings` (a catalog's text wins) and offer their languages in the switch;
    the languages installed."""
    installed = []
    for catalog in read_catalogs(BUILT_IN_DIR, extra_dir):
        strings.TEXTS.setdefault(catalog.language, {}).update(catalog.texts)
        strings.LANGUAGES.setdefault(catalog.language, catalog.name)
        installed.append(catalog.language)
    return installed
