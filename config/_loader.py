"""Reading a TOML file into a :class:`Config`, reporting every problem at once.

Each table is validated on its own, and each ``[[lines]]`` / ``[[agents]]`` entry on its
own, so that one mistake never hides another: syntax aside, the user sees the whole list
in one run. Secrets are resolved before validation, from the file or the environment, so
that the models only ever hold :class:`Secret` values.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from config._checks import cross_check
from config._errors import ConfigError, ConfigIssue
from config._lines import KeyPath, LineIndex, format_path
from config._models import (
    AgentConfig,
    Config,
    HttpConfig,
    InboundConfig,
    LineConfig,
    OutboundConfig,
    SiteConfig,
    WebsocketConfig,
)
from config._types import resolve_path

__all__ = ["load_config", "parse_config"]

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_END = re.compile(r"\s*\(at end of document\)$")


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read, validate and return the configuration in the TOML file at ``path``.

    Relative paths in the file are resolved against the file's directory; secrets are read
    from their files or from ``environ`` (``os.environ`` when ``None``). Raises
    :class:`ConfigError` listing every problem found.
    """
    file = Path(path)
    source = os.fspath(path)
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue("", f"cannot read: {_reason(exc)}", None, source)]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue("", "not valid UTF-8 text", None, source)]) from None
    return parse_config(text, source=source, base_dir=file.absolute().parent, environ=environ)


def parse_config(
    text: str,
    *,
    source: str = "<string>",
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate and return the configuration in the TOML ``text``.

    ``source`` names the text in messages. Relative paths are resolved against
    ``base_dir`` (the current directory when ``None``), and secrets are read from
    ``environ`` (``os.environ`` when ``None``). Raises :class:`ConfigError` listing every
    problem found.
    """
    directory = (base_dir if base_dir is not None else Path.cwd()).absolute()
    env = os.environ if environ is None else environ
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_issue(exc, text, source)]) from None
    return _Builder(text, source, directory, env).build(data)


def _syntax_issue(exc: tomllib.TOMLDecodeError, text: str, source: str) -> ConfigIssue:
    # Python 3.11's TOMLDecodeError carries the position only in its message.
    message = str(exc)
    line: int | None = None
    if (position := _TOML_POSITION.search(message)) is not None:
        line = int(position.group(1))
        message = f"{message[: position.start()]} (column {position.group(2)})"
    elif (end := _TOML_END.search(message)) is not None:
        line = max(1, len(text.splitlines()))
        message = f"{message[: end.start()]} (at end of file)"
    return ConfigIssue("", "toml syntax: " + _lower_first(message), line, source)


@dataclass(frozen=True, slots=True)
class _SecretKeys:
    """The keys one secret can be given by, and what else it depends on."""

    value: str
    file: str
    env: str
    required: bool
    url: str | None = None
    # Whether a password means anything given the url's value, and what to say if not.
    applies: Callable[[object], bool] = lambda _url: True
    pointless: str = ""

    def choices(self) -> str:
        return f"{self.value}, {self.file} or {self.env}"


_LINE_SECRET = _SecretKeys("secret", "secret_file", "secret_env", required=True)
_STORE_SECRET = _SecretKeys(
    "password",
    "password_file",
    "password_env",
    required=False,
    url="url",
    # The default store is SQLite, which has no password.
    applies=lambda url: isinstance(url, str) and not url.startswith("sqlite"),
    pointless="only used with a postgresql+asyncpg url",
)
_MQTT_SECRET = _SecretKeys(
    "mqtt_password",
    "mqtt_password_file",
    "mqtt_password_env",
    required=False,
    url="mqtt_url",
    applies=lambda url: url is not None,
    pointless="only used with mqtt_url",
)
_GATEWAY_SECRET = _SecretKeys(
    "gateway_secret", "gateway_secret_file", "gateway_secret_env", required=False
)
_MAIL_SECRET = _SecretKeys("password", "password_file", "password_env", required=False)
_ENTRY_MODELS: dict[str, type[BaseModel]] = {"lines": LineConfig, "agents": AgentConfig}


class _Builder:
    def __init__(self, text: str, source: str, base_dir: Path, environ: Mapping[str, str]) -> None:
        self._index = LineIndex(text)
        self._source = source
        self._base_dir = base_dir
        self._environ = environ
        self._context = {"base_dir": base_dir}
        self._issues: list[ConfigIssue] = []
        # Paths whose "required" error would only repeat a secret problem already reported.
        self._quiet: set[KeyPath] = set()

    def build(self, data: dict[str, Any]) -> Config:
        values: dict[str, Any] = {}
        for key in data:
            if key not in Config.model_fields:
                self._report((key,), "unknown key")
        for name, field in Config.model_fields.items():
            if name in _ENTRY_MODELS:
                values[name] = self._entries(name, data.get(name, []))
                continue
            model = field.annotation
            assert isinstance(model, type)
            assert issubclass(model, BaseModel)
            if name not in data and field.is_required():
                self._report((name,), f"required: add a [{name}] table")
                continue
            section = self._section(name, model, data.get(name, {}))
            if section is not None:
                values[name] = section

        lines: list[tuple[int, LineConfig]] = values["lines"]
        agents: list[tuple[int, AgentConfig]] = values["agents"]
        raw_lines = data.get("lines", [])
        unchecked = {
            entry.get("extension")
            for index, entry in enumerate(raw_lines if isinstance(raw_lines, list) else [])
            if isinstance(entry, dict) and index not in {i for i, _ in lines}
        }
        for path, message in cross_check(
            lines=lines,
            agents=agents,
            websocket=_of(values.get("websocket"), WebsocketConfig),
            http=_of(values.get("http"), HttpConfig),
            unchecked_lines={ext for ext in unchecked if isinstance(ext, str)},
            site=_of(values.get("site"), SiteConfig),
            outbound=_of(values.get("outbound"), OutboundConfig),
            inbound=_of(values.get("inbound"), InboundConfig),
        ):
            self._report(path, message)
        if self._issues:
            raise ConfigError(self._issues)

        values["lines"] = tuple(line for _, line in lines)
        values["agents"] = tuple(agent for _, agent in agents)
        try:
            return Config.model_validate(values, context=self._context)
        except ValidationError as exc:
            # Every check has run above; this is a safety net, not a code path.
            self._report_validation(exc, ())
            raise ConfigError(self._issues) from None

    def _section(self, name: str, model: type[BaseModel], raw: object) -> BaseModel | None:
        if not isinstance(raw, dict):
            self._report((name,), "must be a table")
            return None
        if name == "store":
            raw = self._resolve_secret(raw, _STORE_SECRET, (name,))
        elif name == "bus":
            raw = self._resolve_secret(raw, _MQTT_SECRET, (name,))
            raw = self._resolve_secret(raw, _GATEWAY_SECRET, (name,))
        elif name == "mail":
            raw = self._resolve_secret(raw, _MAIL_SECRET, (name,))
        return self._validate(model, raw, (name,))

    def _entries(self, name: str, raw: object) -> list[tuple[int, Any]]:
        if not isinstance(raw, list):
            self._report((name,), f"must be an array of tables: [[{name}]]")
            return []
        model = _ENTRY_MODELS[name]
        valid: list[tuple[int, Any]] = []
        for index, entry in enumerate(raw):
            path: KeyPath = (name, index)
            if not isinstance(entry, dict):
                self._report(path, "must be a table")
                continue
            if model is LineConfig:
                entry = self._resolve_secret(entry, _LINE_SECRET, path)
            result = self._validate(model, entry, path)
            if result is not None:
                valid.append((index, result))
        return valid

    def _validate(
        self, model: type[BaseModel], raw: dict[str, Any], prefix: KeyPath
    ) -> BaseModel | None:
        try:
            return model.model_validate(raw, context=self._context)
        except ValidationError as exc:
            self._report_validation(exc, prefix)
            return None

    def _report_validation(self, exc: ValidationError, prefix: KeyPath) -> None:
        for error in exc.errors(include_url=False, include_input=False):
            path = (*prefix, *error["loc"])
            if error["type"] == "missing" and path in self._quiet:
                continue
            self._report(path, _message(error))

    def _report(self, path: KeyPath, message: str) -> None:
        self._issues.append(
            ConfigIssue(format_path(path), message, self._index.line_of(path), self._source)
        )

    # -- secrets -------------------------------------------------------------------------

    def _resolve_secret(
        self,
        raw: dict[str, Any],
        keys: _SecretKeys,
        path: KeyPath,
    ) -> dict[str, Any]:
        raw = dict(raw)
        value_path = (*path, keys.value)
        given = [key for key in (keys.value, keys.file, keys.env) if key in raw]
        url = raw.get(keys.url) if keys.url else None
        if keys.url and isinstance(url, str):
            stripped, password = _split_password(url)
            if password is not None:
                raw[keys.url] = stripped
                raw[keys.value] = password
                given.insert(0, keys.url)

        if not given:
            if keys.required:
                self._quiet.add(value_path)
                self._report(path, f"needs one of {keys.choices()}")
            return raw
        if len(given) > 1:
            first = given[0]
            for key in given[1:]:
                where = f"a password in {first}" if first == keys.url else first
                self._report((*path, key), f"already given by {where}")
            return raw
        if not keys.applies(url):
            self._report((*path, given[0]), keys.pointless)
            return raw

        source = given[0]
        if source == keys.file:
            self._quiet.add(value_path)
            secret = self._read_secret_file(raw, keys.file, path)
        elif source == keys.env:
            self._quiet.add(value_path)
            secret = self._read_secret_env(raw, keys.env, path)
        else:
            return raw
        if secret is not None:
            raw[keys.value] = secret
        return raw

    def _read_secret_file(self, raw: dict[str, Any], key: str, path: KeyPath) -> str | None:
        name = raw[key]
        if not isinstance(name, str) or not name:
            return None  # the field's own validation reports it
        file = resolve_path(Path(name), self._base_dir)
        raw[key] = str(file)
        try:
            content = file.read_bytes().decode("utf-8")
        except OSError as exc:
            self._report((*path, key), f"cannot read {file}: {_reason(exc)}")
            return None
        except UnicodeDecodeError:
            self._report((*path, key), f"{file} is not UTF-8 text")
            return None
        secret = content.rstrip("\r\n")
        if not secret:
            self._report((*path, key), f"{file} is empty")
            return None
        return secret

    def _read_secret_env(self, raw: dict[str, Any], key: str, path: KeyPath) -> str | None:
        name = raw[key]
        if not isinstance(name, str) or not name:
            return None  # the field's own validation reports it
        secret = self._environ.get(name)
        if secret is None:
            self._report((*path, key), f"environment variable {name} is not set")
            return None
        if not secret:
            self._report((*path, key), f"environment variable {name} is empty")
            return None
        return secret


def _split_password(url: str) -> tuple[str, str | None]:
    """Return ``url`` without its password, and the password (``None`` if it has none)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url, None
    if password is None:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}@{host}" if user else host).geturl(), unquote(password)


def _reason(exc: OSError) -> str:
    return _lower_first(exc.strerror or type(exc).__name__)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


# -- pydantic's messages, rewritten for people editing a TOML file ---------------------------

_SIMPLE = {
    "missing": "required",
    "extra_forbidden": "unknown key",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "path_type": "must be a string (a path)",
    "list_type": "must be an array",
    "tuple_type": "must be an array",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dict_type": "must be a table",
    "dataclass_type": "must be a table",
}


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind in _SIMPLE:
        return _SIMPLE[kind]
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    if kind in ("literal_error", "enum"):
        return "must be one of: " + ", ".join(re.findall(r"'([^']*)'", ctx.get("expected", "")))
    bounds = {
        "greater_than_equal": ("must be at least", "ge"),
        "greater_than": ("must be more than", "gt"),
        "less_than_equal": ("must be at most", "le"),
        "less_than": ("must be less than", "lt"),
    }
    if kind in bounds:
        text, key = bounds[kind]
        limit = ctx.get(key)
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return f"{text} {limit}"
    if kind in ("too_short", "string_too_short"):
        minimum = ctx.get("min_length", 1)
        return "must not be empty" if minimum == 1 else f"must have at least {minimum} items"
    if kind in ("too_long", "string_too_long"):
        return f"must have at most {ctx.get('max_length')} items"
    # A message of our own (PydanticCustomError) or one without a rewrite: keep it, minus
    # pydantic's "Input should" phrasing.
    message = error["msg"].replace("Input should be", "must be")
    return _lower_first(message)


_T = TypeVar("_T")


def _of(value: object, kind: type[_T]) -> _T | None:
    """``value`` if it validated as ``kind``, else None (its errors are reported)."""
    return value if isinstance(value, kind) else None
