"""Field types shared by the models: strict scalars and checked strings.

TOML values are already typed, so the scalars are strict: ``port = "5060"`` is reported as
a mistake instead of being silently converted. Each checked string carries a
:class:`Constraint` so that the generated reference can state the rule.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import phonenumbers
from pydantic import AfterValidator, BeforeValidator, Field, Strict, ValidationInfo

__all__ = [
    "Bool",
    "Constraint",
    "Digits",
    "EnvName",
    "Float",
    "Int",
    "Network",
    "NonEmpty",
    "PhoneNumber",
    "Port",
    "RegionCode",
    "RelativePath",
    "TimeZoneName",
    "base_dir",
    "matching",
    "resolve_path",
]


@dataclass(frozen=True, slots=True)
class Constraint:
    """A rule on a field, as the configuration reference states it."""

    text: str


def matching(pattern: str, message: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def base_dir(info: ValidationInfo) -> Path:
    """The directory relative paths are resolved against, from the validation context."""
    context: Any = info.context
    directory = context.get("base_dir") if isinstance(context, dict) else None
    if isinstance(directory, Path):
        return directory
    return Path.cwd()


def resolve_path(path: Path, directory: Path) -> Path:
    """``path`` made absolute against ``directory``, without touching the file system."""
    expanded = path.expanduser()
    if expanded.is_absolute():
        return expanded
    return Path(directory.absolute(), expanded)


def _resolve(value: Path, info: ValidationInfo) -> Path:
    return resolve_path(value, base_dir(info))


def _to_path(value: object) -> object:
    # Paths arrive as TOML strings; Path objects come from code building a model directly.
    if isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string (a path)")
    if not value:
        raise ValueError("must not be empty")
    return Path(value)


def _network(value: str) -> str:
    try:
        if "/" not in value:
            return str(ipaddress.ip_address(value))
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("must be an IP address or a network in CIDR form") from None


def _region(value: str) -> str:
    upper = value.upper()
    if upper not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("must be a two-letter region code known to phonenumbers, like FR")
    return upper


def _time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone, like Europe/Paris") from None
    return value


Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Port = Annotated[int, Strict(), Field(ge=1, le=65535)]
NonEmpty = Annotated[str, Strict(), matching(r"(?s).*\S.*", "must not be empty")]
Digits = Annotated[str, Strict(), matching(r"[0-9]+", "must be digits"), Constraint("digits")]
PhoneNumber = Annotated[
    str,
    Strict(),
    matching(r"\+?[0-9]{2,15}", "must be digits, optionally with a leading +"),
    Constraint("digits, optionally with a leading +"),
]
EnvName = Annotated[
    str,
    Strict(),
    matching(r"[A-Za-z_][A-Za-z0-9_]*", "must be an environment variable name"),
    Constraint("environment variable name"),
]
Network = Annotated[str, Strict(), AfterValidator(_network), Constraint("IP address or CIDR")]
RegionCode = Annotated[
    str, Strict(), AfterValidator(_region), Constraint("region code known to phonenumbers")
]
TimeZoneName = Annotated[str, Strict(), AfterValidator(_time_zone), Constraint("IANA time zone")]
RelativePath = Annotated[
    Path,
    BeforeValidator(_to_path),
    Strict(),
    AfterValidator(_resolve),
    Constraint("relative to the config file's directory"),
]
