"""Switchboard's configuration: a typed, frozen model loaded from one TOML file.

Load it once, at start-up, and pass the :class:`Config` (or the section a component needs)
down; nothing in Switchboard reads configuration at import time::

    cfg = load_config("/etc/switchboard/switchboard.toml")

Every problem in the file is reported at once, in a single :class:`ConfigError` whose
``issues`` carry the key path and line of each. Secrets are :class:`Secret` values that
print as ``**********``.
"""

from config._errors import ConfigError, ConfigIssue
from config._loader import load_config, parse_config
from config._models import (
    AgentConfig,
    BusConfig,
    Config,
    DialerConfig,
    HttpConfig,
    InboundConfig,
    LeadsConfig,
    LineConfig,
    LineRole,
    LogFormat,
    LoggingConfig,
    MailConfig,
    NumberType,
    OutboundConfig,
    OutboundOverride,
    PbxConfig,
    RecordingConfig,
    SipConfig,
    SiteConfig,
    StoreConfig,
    TasksConfig,
    WebsocketConfig,
)
from config._redact import dump_redacted
from config._secret import Secret

__all__ = [
    "AgentConfig",
    "BusConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DialerConfig",
    "HttpConfig",
    "InboundConfig",
    "LeadsConfig",
    "LineConfig",
    "LineRole",
    "LogFormat",
    "LoggingConfig",
    "MailConfig",
    "NumberType",
    "OutboundConfig",
    "OutboundOverride",
    "PbxConfig",
    "RecordingConfig",
    "Secret",
    "SipConfig",
    "SiteConfig",
    "StoreConfig",
    "TasksConfig",
    "WebsocketConfig",
    "dump_redacted",
    "load_config",
    "parse_config",
]
