"""The effective configuration as plain data, safe to print."""

from __future__ import annotations

from typing import Any

from config._models import Config

__all__ = ["dump_redacted"]


def dump_redacted(cfg: Config) -> dict[str, Any]:
    """Return ``cfg`` as plain TOML-like data, with every secret shown as ``**********``.

    Defaults are filled in and paths are absolute, so this is what the daemon will run
    with. Secret values serialise masked; a password that belongs in a URL is shown in it,
    masked, so the reader sees that one is set.
    """
    data = cfg.model_dump(mode="json")
    data["store"]["url"] = cfg.store.redacted_url()
    data["bus"]["mqtt_url"] = cfg.bus.redacted_mqtt_url()
    redacted: dict[str, Any] = _drop_none(data)
    return redacted


def _drop_none(value: Any) -> Any:
    # TOML has no null: an unset optional key is simply absent.
    if isinstance(value, dict):
        return {key: _drop_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_drop_none(item) for item in value]
    return value
