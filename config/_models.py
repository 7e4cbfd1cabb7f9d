"""The configuration model: one frozen pydantic model per TOML table.

Field descriptions are the text of the configuration reference (``config/_docs.py`` renders
them), so they are written for the person editing the file.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from config._checks import cross_check
from config._lines import format_path
from config._secret import MASK, Secret
from config._types import (
    Bool,
    Constraint,
    Digits,
    EnvName,
    Float,
    Int,
    Network,
    NonEmpty,
    PhoneNumber,
    Port,
    RegionCode,
    RelativePath,
    TimeZoneName,
    base_dir,
    matching,
    resolve_path,
)

__all__ = [
    "AgentConfig",
    "BusConfig",
    "Config",
    "DialerConfig",
    "HttpConfig",
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
    "SipConfig",
    "SiteConfig",
    "StoreConfig",
    "TasksConfig",
    "WebsocketConfig",
    "WidgetConfig",
]

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
IpAddress = Annotated[
    str,
    Strict(),
    AfterValidator(lambda value: str(_ip_address(value))),
    Constraint("IP address"),
]
_STORE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
_WORKING_HOURS = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])")
_BRIDGE_RATES = (8000, 16000, 32000, 48000)
_CODEC = re.compile(r"[A-Za-z][A-Za-z0-9.-]*(?:/[0-9]+){0,2}")


def _ip_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("must be an IP address") from None


def _lowercase(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _origin(value: str) -> str:
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        raise ValueError("must be an origin like https://crm.example.com")
    return f"{parts.scheme}://{parts.netloc.lower()}"


Origin = Annotated[
    str, Strict(), AfterValidator(_origin), Constraint("http(s)://host[:port], no path")
]


class LineRole(StrEnum):
    """What a Switchboard line is for."""

    AGENT = "agent"
    RECEPTION = "reception"
    DIALER = "dialer"


class NumberType(StrEnum):
    """What kind of number a phone number is, as ``phonenumbers.number_type`` tells it,
    plus ``satellite`` (the satellite networks' codes +870 and +881, which
    ``phonenumbers`` files as mobile)."""

    FIXED_LINE = "fixed_line"
    MOBILE = "mobile"
    FIXED_LINE_OR_MOBILE = "fixed_line_or_mobile"
    TOLL_FREE = "toll_free"
    PREMIUM_RATE = "premium_rate"
    SHARED_COST = "shared_cost"
    VOIP = "voip"
    PERSONAL_NUMBER = "personal_number"
    PAGER = "pager"
    UAN = "uan"
    VOICEMAIL = "voicemail"
    SATELLITE = "satellite"
    UNKNOWN = "unknown"


class LogFormat(StrEnum):
    """How log lines are rendered."""

    CONSOLE = "console"
    JSON = "json"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SiteConfig(_Section):
    """``[site]``: who this daemon is and where it works."""

    id: Annotated[
        str,
        Strict(),
        matching(r"[a-z0-9-]+", "must be lowercase letters, digits and -"),
        Constraint("a-z, 0-9, -"),
    ] = Field(
        default="main",
        description="Identifier of this daemon (site). Every event carries it as its origin, "
        "and MQTT topics include it, so daemons sharing a store and a broker need "
        "distinct ids.",
    )
    default_region: RegionCode = Field(
        default="FR",
        description="ISO 3166 region used to read phone numbers typed without a leading + "
        "(national format), such as 01 23 45 67 89 in France.",
    )
    timezone: TimeZoneName = Field(
        default="UTC",
        description="IANA time zone of the call centre: working hours are read in it, and "
        "the web pages display times in it. Times are stored in UTC regardless.",
    )
    working_days: tuple[Weekday, ...] = Field(
        default=("mon", "tue", "wed", "thu", "fri"),
        min_length=1,
        description="Days the call centre works; the auto-dialer only dials on these days.",
    )
    working_hours: Annotated[str, Strict(), Constraint("HH:MM-HH:MM, start before end")] = Field(
        default="09:00-19:00",
        description="Opening hours on working days, in the site time zone; the "
        "auto-dialer only dials within them.",
    )

    @field_validator("working_days")
    @classmethod
    def _distinct_days(cls, days: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(days)) != len(days):
            raise ValueError("must not list a day twice")
        return days

    @field_validator("working_hours")
    @classmethod
    def _check_hours(cls, value: str) -> str:
        match = _WORKING_HOURS.fullmatch(value)
        if match is None:
            raise ValueError('must be "HH:MM-HH:MM", like "09:00-19:00"')
        start_h, start_m, end_h, end_m = (int(group) for group in match.groups())
        if end_h == 24 and end_m != 0:
            raise ValueError('must be "HH:MM-HH:MM", like "09:00-19:00"')
        if (start_h, start_m) >= (end_h, end_m):
            raise ValueError("must start before it ends")
        return value

    def opening_hours(self) -> tuple[time, time | None]:
        """Return (opening, closing) times; closing is ``None`` for ``24:00`` (midnight)."""
        start, end = self.working_hours.split("-")
        closing = None if end == "24:00" else time.fromisoformat(end)
        return time.fromisoformat(start), closing

    def zone(self) -> ZoneInfo:
        """Return the site's time zone."""
        return ZoneInfo(self.timezone)


class PbxConfig(_Section):
    """``[pbx]``: the PBX the lines register on."""

    host: NonEmpty = Field(description="Host name or IP address of the PBX (SIP registrar).")
    port: Port = Field(default=5060, description="SIP port of the PBX.")
    transport: Literal["udp", "tcp"] = Field(
        default="udp",
        description="SIP transport used to reach the PBX; the workers listen on this one "
        "only. `tls` is refused: the workers do not support it yet.",
    )
    domain: NonEmpty = Field(
        description="SIP domain of the accounts: lines register as `sip:<extension>@<domain>`."
    )
    realm: NonEmpty | None = Field(
        default=None,
        json_schema_extra={"default_text": "the domain"},
        description="Digest realm of the PBX's challenges. The lines answer only a "
        "challenge for this realm, so that no other server can obtain their digest.",
    )
    allowed_sources: tuple[Network, ...] = Field(
        default=(),
        validate_default=True,
        json_schema_extra={"default_text": "the host, when it is an IP address"},
        description="IP addresses or CIDR networks SIP traffic is accepted from. Each "
        "worker's SIP socket carries a kernel filter that drops packets from anywhere else "
        "before the SIP stack (which has known parser bugs) reads them; RTP is not filtered "
        "by the workers: see `switchboard firewall`. Required when host is a name.",
    )
    register_expires: Int = Field(
        default=300, ge=60, description="Registration lifetime requested from the PBX, seconds."
    )
    outbound_caller_id: PhoneNumber | None = Field(
        default=None,
        description="Caller id presented on outgoing calls, unless the line sets its own.",
    )

    @field_validator("transport", mode="before")
    @classmethod
    def _runnable_transport(cls, transport: Any) -> Any:
        if transport == "tls":
            raise ValueError(
                "tls is not supported by the SIP workers yet (no certificate settings); "
                "use udp or tcp (over a VPN or a private network to the PBX)"
            )
        return transport

    @field_validator("allowed_sources")
    @classmethod
    def _default_to_host(cls, sources: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if sources:
            return sources
        host = info.data.get("host")
        if host is None:
            return sources  # the host itself is invalid, and reported as such
        try:
            return (str(ipaddress.ip_address(host)),)
        except ValueError:
            raise ValueError("required when host is a name, not an IP address") from None

    def accepts(self, address: str) -> bool:
        """Tell whether SIP traffic from ``address`` (an IP address) is to be accepted."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(source) for source in self.allowed_sources)


class SipConfig(_Section):
    """``[sip]``: the pool of SIP worker processes."""

    bind_address: IpAddress = Field(
        default="127.0.0.1",
        description="Local address SIP and RTP sockets bind to; pick the interface that "
        "faces the PBX.",
    )
    port_range_start: Port = Field(
        default=25060,
        description="SIP port of the first worker; worker n uses port_range_start + n.",
    )
    max_workers: Int = Field(
        default=16,
        ge=1,
        description="Maximum number of SIP worker processes. Each logged-in agent has one; "
        "reception and dialer lines share the rest.",
    )
    calls_per_worker: Int = Field(
        default=4,
        ge=1,
        le=4,
        description="Simultaneous calls per worker. The pjsua2 wheel is compiled with "
        "PJSUA_MAX_CALLS = 4, so one process cannot hold more than 4 calls.",
    )
    accounts_per_worker: Int = Field(
        default=8,
        ge=1,
        le=8,
        description="Registered accounts (lines) per worker. The pjsua2 wheel is compiled "
        "with PJSUA_MAX_ACC = 8, so one process cannot register more than 8.",
    )
    rtp_port_range: Annotated[
        tuple[Port, Port], Constraint("[first, last], first < last, apart from SIP ports")
    ] = Field(
        default=(30000, 30999),
        description="First and last UDP port for RTP (audio); workers share the range.",
    )
    restart_backoff_max: Float = Field(
        default=30.0,
        gt=0,
        description="Longest wait, in seconds, before restarting a crashed worker. The "
        "first restart is immediate, then the wait doubles from one second up to this; a "
        "worker that stays up for a minute starts again from an immediate restart.",
    )
    reconcile_interval: Float = Field(
        default=10.0,
        gt=0,
        description="Seconds between two comparisons of the calls the live views show "
        "(supervisor feed, agents busy on a call, open call records) with the calls the "
        "SIP services hold; a call missing from the services at two comparisons in a row "
        "is ended with reason lost, so a missed call.ended never leaves an agent busy.",
    )

    codecs: tuple[NonEmpty, ...] = Field(
        default=("PCMA", "PCMU", "G722"),
        min_length=1,
        description="Audio codecs the workers offer and accept, most preferred first; "
        "every other codec of the SIP stack is disabled. A name (`PCMA`, `PCMU`, "
        "`G722`, `GSM`, `iLBC`, `speex`, `opus` when built in) or a name with its clock "
        "rate (`speex/16000`). Matched without regard to case; a worker refuses to start "
        "when none is available. DTMF (RFC 4733) is always offered.",
    )

    # Media: the conference bridge every worker mixes its calls in. pjmedia's own
    # defaults are a softphone's (16 kHz, echo canceller, silence detection); a
    # server has no sound card and pays for each of them on every call.
    bridge_clock_rate: Literal["auto", 8000, 16000, 32000, 48000] = Field(
        default="auto",
        description="Sample rate of the workers' conference bridge, Hz. `auto` follows "
        "`codecs`: 16000 when the first (preferred) codec is wideband (G722, "
        "`speex/16000`, opus), else 8000. At 8000 a G.711 call is bridged and recorded "
        "without any resampling, about half the CPU of 16000; a G.722 call is then "
        "narrowed to telephone band (put G722 first to keep its band).",
    )
    echo_canceller_tail: Int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Echo canceller tail, milliseconds; 0 switches it off. Echo comes from "
        "a loudspeaker near a microphone, which a server does not have: the phones and the "
        "PBX cancel their own.",
    )
    vad: Bool = Field(
        default=False,
        description="Silence detection: send no audio while a party is silent. Off, so "
        "that recordings and the PBX get a steady stream and no time is spent measuring "
        "levels.",
    )
    resample_quality: Int = Field(
        default=4,
        ge=0,
        le=10,
        description="Quality of the resampling between a call's codec rate and the "
        "bridge's, 0 (linear) to 10; 3-4 use the small filter, 5-10 the large one "
        "(pjmedia's default 8 costs several times 4 for no audible difference on a "
        "phone call). Unused when every call runs at the bridge's rate.",
    )
    jitter_buffer_max: Int | None = Field(
        default=None,
        ge=20,
        le=5000,
        description="Longest a call's jitter buffer may grow, milliseconds; unset keeps "
        "pjmedia's own (500 ms). Lower it on a network known to be steady.",
    )

    @field_validator("bridge_clock_rate", mode="before")
    @classmethod
    def _bridge_rate(cls, rate: Any) -> Any:
        if rate != "auto" and (type(rate) is not int or rate not in _BRIDGE_RATES):
            rates = ", ".join(map(str, _BRIDGE_RATES))
            raise ValueError(f'must be "auto" or one of {rates}')
        return rate

    @field_validator("codecs")
    @classmethod
    def _codec_names(cls, codecs: tuple[str, ...]) -> tuple[str, ...]:
        for codec in codecs:
            if _CODEC.fullmatch(codec) is None:
                raise ValueError(f'{codec!r} is not a codec name like "PCMA" or "speex/16000"')
        if len({c.lower() for c in codecs}) != len(codecs):
            raise ValueError("must not list a codec twice")
        return codecs

    @field_validator("max_workers")
    @classmethod
    def _ports_fit(cls, workers: int, info: ValidationInfo) -> int:
        start = info.data.get("port_range_start")
        if start is not None and start + workers - 1 > 65535:
            raise ValueError(f"workers' SIP ports would go past 65535 from {start}")
        return workers

    @field_validator("rtp_port_range", mode="before")
    @classmethod
    def _pair(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise ValueError("must be two ports: [first, last]")
        return value

    @field_validator("rtp_port_range")
    @classmethod
    def _rtp_range(cls, value: tuple[int, int], info: ValidationInfo) -> tuple[int, int]:
        first, last = value
        if first >= last:
            raise ValueError("first port must be below last port")
        start, workers = info.data.get("port_range_start"), info.data.get("max_workers")
        if start is not None and workers is not None:
            end = start + workers - 1
            if first <= end and start <= last:
                raise ValueError(f"overlaps the workers' SIP ports {start}-{end}")
        return value

    def sip_port(self, worker: int) -> int:
        """Return the SIP port of worker number ``worker`` (0-based)."""
        if not 0 <= worker < self.max_workers:
            raise ValueError(f"worker {worker} out of range 0..{self.max_workers - 1}")
        return self.port_range_start + worker


class LineConfig(_Section):
    """``[[lines]]``: one SIP account Switchboard registers on the PBX."""

    extension: Digits = Field(description="Extension (SIP user name) of the line on the PBX.")
    role: LineRole = Field(
        description="agent: an agent works through it; reception: answers inbound calls "
        "and routes them; dialer: places the auto-dialer's calls."
    )
    secret: Secret = Field(
        json_schema_extra={"default_text": "one of secret, secret_file, secret_env"},
        description="SIP password of the line. Give exactly one of secret, secret_file and "
        "secret_env; prefer secret_file or secret_env so the file can be shared.",
    )
    secret_file: RelativePath | None = Field(
        default=None,
        description="File holding the SIP password (trailing newline ignored). Keep it mode "
        "0600, owned by the service user.",
    )
    secret_env: EnvName | None = Field(
        default=None, description="Environment variable holding the SIP password."
    )
    display_name: NonEmpty | None = Field(
        default=None, description="Display name sent with calls from this line."
    )
    caller_id: PhoneNumber | None = Field(
        default=None,
        description="Caller id presented on calls from this line; defaults to "
        "pbx.outbound_caller_id.",
    )


class AgentConfig(_Section):
    """``[[agents]]``: a person taking calls, and the line they work through."""

    name: NonEmpty = Field(description="Name shown on the supervisor feed and in call records.")
    extension: Digits = Field(
        description="Extension of the agent's own desk or soft phone on the PBX; Switchboard "
        "rings it to connect the agent to calls."
    )
    line: Digits = Field(
        description="Extension of the Switchboard line (a [[lines]] entry with role agent) "
        "the agent's calls go through; one agent per line."
    )
    user: (
        Annotated[
            str,
            Strict(),
            matching(r"[a-z0-9._-]+", "must be lowercase letters, digits and . _ -"),
            Constraint("a-z, 0-9, . _ -"),
        ]
        | None
    ) = Field(default=None, description="User name of the agent in the CRM store, if any.")
    supervisor: Bool = Field(
        default=False,
        description="Supervisors see every call and may listen, whisper and barge in.",
    )

    @property
    def key(self) -> str:
        """How events, commands and rights name this agent: its CRM user, else its name.

        One definition, so the SIP pool's events and the gateway's rights agree.
        """
        return self.user or self.name


class RecordingConfig(_Section):
    """``[recording]``: call recordings."""

    enabled: Bool = Field(default=True, description="Record calls.")
    directory: RelativePath = Field(
        default=Path("recordings"),
        validate_default=True,
        description="Directory recordings are written to.",
    )
    retention_days: Int = Field(
        default=90, ge=0, description="Days recordings are kept; 0 keeps them forever."
    )
    format: Literal["wav"] = Field(default="wav", description="File format of recordings.")


class StoreConfig(_Section):
    """``[store]``: the CRM store (clients, leads, calls)."""

    url: Annotated[str, Strict(), Constraint("sqlite+aiosqlite:// or postgresql+asyncpg://")] = (
        Field(
            default="sqlite+aiosqlite:///switchboard.sqlite3",
            validate_default=True,
            json_schema_extra={
                "default_text": "sqlite+aiosqlite:///switchboard.sqlite3 (next to the config file)"
            },
            description="SQLAlchemy URL of the store. A relative SQLite path is relative to "
            "the config file's directory. A password written in the URL is moved out of "
            "it and treated as a secret.",
        )
    )
    password: Secret | None = Field(
        default=None,
        description="Password of the PostgreSQL user; give at most one of password, "
        "password_file, password_env and a password in the url.",
    )
    password_file: RelativePath | None = Field(
        default=None, description="File holding the PostgreSQL password."
    )
    password_env: EnvName | None = Field(
        default=None, description="Environment variable holding the PostgreSQL password."
    )
    auto_migrate: Bool = Field(
        default=True, description="Upgrade the database schema when the daemon starts."
    )
    pool_size: Int = Field(
        default=5, ge=1, description="Connections kept open to PostgreSQL (not used by SQLite)."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str, info: ValidationInfo) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("must be a database URL") from None
        if url.drivername not in _STORE_DRIVERS:
            raise ValueError("scheme must be one of: " + ", ".join(_STORE_DRIVERS))
        if url.password is not None:
            raise ValueError("must not contain the password: use password_file or password_env")
        if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:"):
            database = resolve_path(Path(url.database), base_dir(info))
            url = url.set(database=str(database))
        return url.render_as_string(hide_password=False)

    @property
    def is_sqlite(self) -> bool:
        """True when the store is an SQLite file (or in memory)."""
        return self.url.startswith("sqlite")

    def url_with_secret(self) -> str:
        """Return the URL with the password put in; hand it to the engine, never print it."""
        return self._url(self.password.reveal() if self.password else None)

    def redacted_url(self) -> str:
        """Return the URL with the password, if any, shown as ``**********``."""
        return self._url(MASK if self.password else None).replace("%2A", "*")

    def _url(self, password: str | None) -> str:
        url: URL = make_url(self.url)
        if password is not None:
            url = url.set(password=password)
        return url.render_as_string(hide_password=False)


class BusConfig(_Section):
    """``[bus]``: the event bus, and its optional MQTT bridge for multi-host set-ups."""

    mqtt_url: Annotated[str, Strict(), Constraint("mqtt:// or mqtts://")] | None = Field(
        default=None,
        description="MQTT broker to publish events to and receive them from, like "
        "mqtts://switchboard@broker.example:8883. Unset: events stay in this process. A "
        "password written in the URL is moved out of it and treated as a secret.",
    )
    mqtt_password: Secret | None = Field(
        default=None,
        description="Broker password; give at most one of mqtt_password, "
        "mqtt_password_file, mqtt_password_env and a password in mqtt_url.",
    )
    mqtt_password_file: RelativePath | None = Field(
        default=None, description="File holding the broker password."
    )
    mqtt_password_env: EnvName | None = Field(
        default=None, description="Environment variable holding the broker password."
    )
    topic_prefix: Annotated[
        str,
        Strict(),
        matching(r"[^/+#\s]+(/[^/+#\s]+)*", "must be topic levels without + # or blanks"),
        Constraint("MQTT topic levels, no wildcards"),
    ] = Field(default="switchboard", description="First levels of every MQTT topic.")
    subscriber_queue: Int = Field(
        default=1000,
        ge=1,
        description="Events buffered per in-process subscriber before it is considered "
        "too slow and dropped.",
    )
    mqtt_ca_file: RelativePath | None = Field(
        default=None,
        description="PEM file of the certificate authorities that sign the broker's "
        "certificate, for mqtts://. Unset: the system's trusted authorities.",
    )
    mqtt_cert_file: RelativePath | None = Field(
        default=None,
        description="PEM client certificate (chain) presented to the broker over "
        "mqtts://; set together with mqtt_key_file.",
    )
    mqtt_key_file: RelativePath | None = Field(
        default=None,
        validate_default=True,
        description="PEM private key of mqtt_cert_file.",
    )
    gateway_secret: Secret | None = Field(
        default=None,
        description="Key shared by the daemons and the scale-out gateways (`switchboard "
        "gateway`): a gateway signs with it, per command, which user sends it, instead of "
        "forwarding the user's token. At least 32 characters (`openssl rand -hex 32`). "
        "Unset: the daemon accepts no gateway's commands, and `switchboard gateway` does "
        "not start. Give at most one of gateway_secret, gateway_secret_file and "
        "gateway_secret_env.",
    )
    gateway_secret_file: RelativePath | None = Field(
        default=None, description="File holding the gateway secret."
    )
    gateway_secret_env: EnvName | None = Field(
        default=None, description="Environment variable holding the gateway secret."
    )

    @field_validator("mqtt_ca_file", "mqtt_cert_file")
    @classmethod
    def _tls_needs_mqtts(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        url = info.data.get("mqtt_url")
        if value is not None and not (isinstance(url, str) and url.startswith("mqtts://")):
            raise ValueError("only used with an mqtts:// mqtt_url")
        return value

    @field_validator("gateway_secret")
    @classmethod
    def _check_gateway_secret(cls, value: Secret | None) -> Secret | None:
        if value is not None and len(value.reveal()) < 32:
            raise ValueError("must be at least 32 characters (`openssl rand -hex 32`)")
        return value

    @field_validator("mqtt_key_file")
    @classmethod
    def _mqtt_cert_and_key(cls, key: Path | None, info: ValidationInfo) -> Path | None:
        if "mqtt_cert_file" not in info.data:
            return key  # mqtt_cert_file itself is invalid, and reported as such
        cert = info.data["mqtt_cert_file"]
        if cert is not None and key is None:
            raise ValueError("required when mqtt_cert_file is set")
        if key is not None and cert is None:
            raise ValueError("needs mqtt_cert_file as well")
        return key

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - parsing the port is what validates it
        except ValueError:
            raise ValueError("port must be a number from 1 to 65535") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must be mqtt://host[:port] or mqtts://host[:port]")
        if parts.password is not None:
            raise ValueError(
                "must not contain the password: use mqtt_password_file or mqtt_password_env"
            )
        return value

    def redacted_mqtt_url(self) -> str | None:
        """Return ``mqtt_url`` with the password, if any, shown as ``**********``."""
        if self.mqtt_url is None or self.mqtt_password is None:
            return self.mqtt_url
        parts = urlsplit(self.mqtt_url)
        user, _, host = parts.netloc.rpartition("@")
        return parts._replace(netloc=f"{user}:{MASK}@{host}").geturl()


class WebsocketConfig(_Section):
    """``[websocket]``: the websocket server the widget and the live feed connect to."""

    host: NonEmpty = Field(default="127.0.0.1", description="Address to listen on.")
    port: Port = Field(default=8765, description="Port to listen on.")
    allowed_origins: tuple[Origin, ...] = Field(
        default=("http://127.0.0.1:8080", "http://localhost:8080"),
        description="Browser origins allowed to connect (the Origin header); pages served "
        "from elsewhere are refused.",
    )
    tls_cert: RelativePath | None = Field(
        default=None,
        description="PEM certificate chain for wss://; set together with tls_key.",
    )
    tls_key: RelativePath | None = Field(
        default=None,
        validate_default=True,
        description="PEM private key for wss://; set together with tls_cert.",
    )
    max_message_bytes: Int = Field(
        default=65536, ge=1024, description="Largest message accepted from a client, bytes."
    )
    commands_per_second: Int = Field(
        default=20, ge=1, description="Commands a client may send per second before throttling."
    )
    ping_interval: Float = Field(
        default=20.0, gt=0, description="Seconds between keep-alive pings."
    )
    replay_buffer: Int = Field(
        default=10000,
        ge=0,
        description="Recent events kept so a reconnecting client can resume from its last "
        "sequence number.",
    )
    client_queue: Int = Field(
        default=1000,
        ge=1,
        description="Events queued per client before a slow client is disconnected.",
    )
    max_unauthenticated: Int = Field(
        default=256,
        ge=1,
        description="Connections that may wait for their auth message at once; more are "
        "closed with 1013.",
    )
    max_unauthenticated_per_address: Int = Field(
        default=32,
        ge=1,
        description="Of those, how many may come from one IP address (behind a reverse proxy, "
        "every client has the proxy's address: raise it).",
    )
    max_sessions_per_user: Int = Field(
        default=16,
        ge=1,
        description="Open sessions one user may have; one more is closed with 4409.",
    )
    auth_failures_per_address: Int = Field(
        default=30,
        ge=1,
        description="Failed authentications from one IP address within auth_failure_window "
        "after which its new connections are closed with 4429 until the window has passed.",
    )
    auth_failure_window: Float = Field(
        default=60.0, gt=0, description="Seconds over which auth failures are counted."
    )
    session_check_interval: Float = Field(
        default=0.5,
        gt=0,
        le=5,
        description="Seconds between re-checks of the open sessions' tokens: a revoked token, "
        "a disabled user or changed rights close the session (4401) within this delay plus "
        "one store read.",
    )

    @field_validator("tls_key")
    @classmethod
    def _cert_and_key(cls, key: Path | None, info: ValidationInfo) -> Path | None:
        if "tls_cert" not in info.data:
            return key  # tls_cert itself is invalid, and reported as such
        cert = info.data["tls_cert"]
        if cert is not None and key is None:
            raise ValueError("required when tls_cert is set")
        if key is not None and cert is None:
            raise ValueError("needs tls_cert as well")
        return key


class HttpConfig(_Section):
    """``[http]``: the HTTP API and the web pages."""

    host: NonEmpty = Field(default="127.0.0.1", description="Address to listen on.")
    port: Annotated[int, Strict(), Field(ge=0, le=65535)] = Field(
        default=8080, description="Port to listen on (0: any free port, for tests)."
    )
    max_body_bytes: Int = Field(
        default=65536,
        ge=1024,
        description="Largest request body accepted, bytes; a larger one is refused with "
        "413 too_large.",
    )


def _ws_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("must be a websocket URL like wss://switchboard.example.com/")
    return value


WebsocketUrl = Annotated[
    str, Strict(), AfterValidator(_ws_url), Constraint("ws(s)://host[:port][/path]")
]


def _distinct_texts(values: tuple[str, ...]) -> tuple[str, ...]:
    if len({v.casefold() for v in values}) != len(values):
        raise ValueError("must not list a value twice")
    return values


class WidgetConfig(_Section):
    """``[widget]``: the agent's call widget (the web page and the embeddable panel)."""

    pause_reasons: tuple[Annotated[NonEmpty, Field(max_length=200)], ...] = Field(
        default=("lunch", "break", "training", "meeting", "after-call work"),
        min_length=1,
        description="Reasons an agent may give for a pause, in the order offered; "
        "agent.state.set refuses any other (bad_request).",
    )
    dispositions: tuple[Annotated[NonEmpty, Field(max_length=64)], ...] = Field(
        default=(
            "interested",
            "callback",
            "sale",
            "not interested",
            "wrong number",
            "voicemail",
        ),
        min_length=1,
        description="Outcomes an agent may give a call at wrap-up, in the order offered; "
        "call.disposition refuses any other (bad_request).",
    )
    wrap_up: Literal["off", "optional", "required"] = Field(
        default="optional",
        description="After a call: off: no wrap-up step; optional: the step is shown and "
        "may be skipped; required: the agent gives a disposition before the next call.",
    )
    corner: Literal["bottom-right", "bottom-left"] = Field(
        default="bottom-right",
        description="Corner of the CRM's page where the embedded panel floats.",
    )
    language: Literal["en", "fr"] = Field(
        default="en", description="Language of the widget when the browser asks for none we have."
    )
    websocket_url: WebsocketUrl | None = Field(
        default=None,
        json_schema_extra={"default_text": "from [websocket] host and port"},
        description="URL the pages use to reach the websocket, when it differs from "
        "[websocket] host and port (behind a reverse proxy).",
    )

    @field_validator("pause_reasons", "dispositions")
    @classmethod
    def _distinct_values(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _distinct_texts(values)


class LoggingConfig(_Section):
    """``[logging]``: log output."""

    format: LogFormat = Field(
        default=LogFormat.CONSOLE,
        description="console: readable lines for a terminal; json: one JSON object per "
        "line, for journald and log shippers.",
    )
    level: Annotated[
        Literal["debug", "info", "warning", "error"],
        BeforeValidator(_lowercase),
        Constraint("case-insensitive"),
    ] = Field(default="info", description="Lowest level logged.")


class DialerConfig(_Section):
    """``[dialer]``: the auto-dialer."""

    gap_seconds: Float = Field(
        default=5.0, ge=0, description="Pause between the end of a call and the next dial."
    )
    ring_timeout: Int = Field(
        default=30, gt=0, description="Seconds a number may ring before it counts as no answer."
    )
    wrap_up_seconds: Int = Field(
        default=0, ge=0, description="Seconds left to the agent after a call, before the next."
    )
    max_attempts: Int = Field(default=3, ge=1, description="Dial attempts per number.")
    retry_busy_minutes: Int = Field(
        default=10, ge=0, description="Minutes before a busy number is dialed again."
    )
    retry_no_answer_minutes: Int = Field(
        default=60, ge=0, description="Minutes before an unanswered number is dialed again."
    )
    create_leads: Bool = Field(
        default=True,
        description="Create a lead for an answered number that matches no client.",
    )
    agent_leg: Literal["persistent", "per_call"] = Field(
        default="persistent",
        description="persistent: the agent's phone stays connected between calls; "
        "per_call: it is rung for each answered call.",
    )
    claim_lease_seconds: Float = Field(
        default=120.0,
        gt=0,
        description="How long a number claimed but not yet dialed stays reserved to the "
        "daemon that claimed it. A daemon killed between claim and dial leaves its claims "
        "behind; after this lease another daemon sharing the store takes them over. Must "
        "exceed gap_seconds (a live claim lasts about one gap).",
    )

    @field_validator("claim_lease_seconds")
    @classmethod
    def _lease_outlasts_gap(cls, value: float, info: ValidationInfo) -> float:
        gap = info.data.get("gap_seconds")
        if isinstance(gap, float | int) and value <= gap + 1:
            raise ValueError(
                f"must exceed gap_seconds ({gap}) by more than 1 s: a live claim lasts "
                "about one gap"
            )
        return value


class InboundConfig(_Section):
    """``[inbound]``: calls to reception lines."""

    strategy: Literal["longest_idle", "in_order"] = Field(
        default="longest_idle",
        description="Which available agent is offered a call first: longest_idle: the one "
        "idle the longest; in_order: the first in [[agents]] order.",
    )
    agent_ring_seconds: Int = Field(
        default=20,
        gt=0,
        description="Seconds an agent's phone rings before the call is offered to the next "
        "available agent.",
    )
    no_agent_timeout: Int = Field(
        default=30,
        gt=0,
        description="Seconds a caller may ring while no agent answers, before no_agent_action.",
    )
    no_agent_action: Literal["reject", "forward"] = Field(
        default="reject",
        description="reject: end the call with reject_code; forward: connect the caller to "
        "overflow_number (recorded like any call).",
    )
    reject_code: Int = Field(
        default=480,
        ge=400,
        le=699,
        description="SIP status sent to a caller no agent answered (480 Temporarily Unavailable).",
    )
    overflow_number: PhoneNumber | None = Field(
        default=None,
        description="Number or extension calls go to when no agent answers and "
        "no_agent_action is forward.",
    )

    @model_validator(mode="after")
    def _overflow_given(self) -> InboundConfig:
        if self.no_agent_action == "forward" and self.overflow_number is None:
            raise ValueError("overflow_number is required when no_agent_action is forward")
        return self


def _country(value: str) -> str:
    # After Strict(): always a string. phonenumbers' regions never hold the
    # non-geographic "001", so it is refused like any unknown code.
    if value == "*":
        return value
    upper = value.upper()
    if upper not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"{value!r} is not a two-letter region code known to phonenumbers, like DE, or *"
        )
    return upper


Country = Annotated[str, Strict(), AfterValidator(_country), Constraint("region code, or *")]
_REFUSED_BY_DEFAULT = (
    NumberType.PREMIUM_RATE,
    NumberType.SHARED_COST,
    NumberType.SATELLITE,
    NumberType.UNKNOWN,
)


def _distinct(values: tuple[Any, ...]) -> tuple[Any, ...]:
    if len(set(values)) != len(values):
        raise ValueError("must not list a value twice")
    return values


class OutboundOverride(_Section):
    """``[[outbound.overrides]]``: other outbound rules for some agents."""

    agents: tuple[NonEmpty, ...] = Field(
        min_length=1,
        description="Agents the override applies to, by their key (their user, else their "
        "name). An agent may appear in one override only.",
    )
    allowed_countries: tuple[Country, ...] | None = Field(
        default=None,
        json_schema_extra={"default_text": "outbound.allowed_countries"},
        description="Replaces outbound.allowed_countries for these agents (the default "
        "region stays allowed).",
    )
    refused_types: tuple[NumberType, ...] | None = Field(
        default=None,
        json_schema_extra={"default_text": "outbound.refused_types"},
        description="Replaces outbound.refused_types for these agents; [] refuses no type.",
    )

    @field_validator("agents", "allowed_countries", "refused_types")
    @classmethod
    def _distinct_values(cls, values: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        return None if values is None else _distinct(values)


class OutboundConfig(_Section):
    """``[outbound]``: which numbers agents, transfers, the dialer and the overflow may
    call, against toll fraud; a refused call gets the error forbidden, naming the rule."""

    allowed_countries: tuple[Country, ...] = Field(
        default=(),
        description="Regions (ISO 3166 codes known to phonenumbers) that may be called "
        "besides site.default_region, which is always allowed; * allows every country, "
        "including the non-geographic codes (+800, +882...).",
    )
    refused_types: tuple[NumberType, ...] = Field(
        default=_REFUSED_BY_DEFAULT,
        description="Kinds of numbers never called, whatever the country: fixed_line, "
        "mobile, fixed_line_or_mobile, toll_free, premium_rate, shared_cost, voip, "
        "personal_number, pager, uan, voicemail, satellite (+870, +881), unknown.",
    )
    extensions: tuple[Digits, ...] = Field(
        default=(),
        description="Extensions calls may be transferred to besides the agents' own "
        "phones ([[agents]] extension), such as a reception or a voicemail; a target of "
        "up to six digits is an extension, and any other is refused.",
    )
    overrides: tuple[OutboundOverride, ...] = Field(
        default=(), description="See [[outbound.overrides]]."
    )

    @field_validator("allowed_countries", "refused_types", "extensions")
    @classmethod
    def _distinct_values(cls, values: tuple[Any, ...]) -> tuple[Any, ...]:
        return _distinct(values)


class LeadsConfig(_Section):
    """``[leads]``: leads created from calls with unknown numbers."""

    from_incoming_calls: Bool = Field(
        default=True,
        description="An inbound call from a number that matches no client or lead creates "
        "a lead (source incoming_call) at once, shown in the ringing pop-up.",
    )
    from_outgoing_calls: Bool = Field(
        default=True,
        description="An answered outbound call to a number that matches no client or lead "
        "creates a lead (source outgoing_call), owned by the agent.",
    )


class MailConfig(_Section):
    """``[mail]``: the SMTP server task reminders are mailed through. Without a host,
    reminders are shown in the widget only."""

    host: NonEmpty | None = Field(
        default=None, description="SMTP server's host name or address. Unset: no e-mail."
    )
    port: Port | None = Field(
        default=None,
        json_schema_extra={"default_text": "587 with starttls, 465 with tls, 25 with none"},
        description="SMTP server's port.",
    )
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls",
        description="starttls: plain connection upgraded with STARTTLS (refused if the "
        "server does not offer it); tls: TLS from the first byte (SMTPS); none: no "
        "encryption, for a relay on the same host only.",
    )
    user: NonEmpty | None = Field(
        default=None, description="User name to log in with; unset: no login."
    )
    password: Secret | None = Field(
        default=None,
        description="Password of user; give at most one of password, password_file and "
        "password_env.",
    )
    password_file: RelativePath | None = Field(
        default=None, description="File holding the SMTP password."
    )
    password_env: EnvName | None = Field(
        default=None, description="Environment variable holding the SMTP password."
    )
    from_address: (
        Annotated[
            str,
            Strict(),
            matching(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", "must be an e-mail address"),
            Constraint("e-mail address"),
        ]
        | None
    ) = Field(default=None, description="The From address of the mails; required with host.")
    timeout: Float = Field(
        default=30.0, gt=0, le=300, description="Seconds to wait on the SMTP server."
    )

    @model_validator(mode="after")
    def _complete(self) -> MailConfig:
        if self.host is not None and self.from_address is None:
            raise ValueError("from_address is required when host is set")
        if (self.user is None) != (self.password is None):
            raise ValueError(
                "user and a password (password, password_file or password_env) go together"
            )
        if (
            self.user is not None
            and self.security == "none"
            and self.host
            not in (
                "localhost",
                "127.0.0.1",
                "::1",
            )
        ):
            raise ValueError("a password is not sent unencrypted: use starttls or tls")
        return self

    @property
    def enabled(self) -> bool:
        return self.host is not None

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"starttls": 587, "tls": 465, "none": 25}[self.security]


class TasksConfig(_Section):
    """``[tasks]``: tasks and their reminders."""

    reminder_interval: Float = Field(
        default=30.0,
        ge=0.1,
        le=600,
        description="Seconds between two looks for reminders that are due (by the daemon, "
        "which mails them, and by the widget, which shows them).",
    )


class Config(BaseModel):
    """The whole configuration of one Switchboard daemon."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    site: SiteConfig = Field(default_factory=SiteConfig, description="See [site].")
    pbx: PbxConfig = Field(description="See [pbx].")
    sip: SipConfig = Field(default_factory=SipConfig, description="See [sip].")
    lines: tuple[LineConfig, ...] = Field(default=(), description="See [[lines]].")
    agents: tuple[AgentConfig, ...] = Field(default=(), description="See [[agents]].")
    recording: RecordingConfig = Field(
        default_factory=RecordingConfig, description="See [recording]."
    )
    store: StoreConfig = Field(default_factory=StoreConfig, description="See [store].")
    bus: BusConfig = Field(default_factory=BusConfig, description="See [bus].")
    websocket: WebsocketConfig = Field(
        default_factory=WebsocketConfig, description="See [websocket]."
    )
    http: HttpConfig = Field(default_factory=HttpConfig, description="See [http].")
    widget: WidgetConfig = Field(default_factory=WidgetConfig, description="See [widget].")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="See [logging].")
    dialer: DialerConfig = Field(default_factory=DialerConfig, description="See [dialer].")
    inbound: InboundConfig = Field(default_factory=InboundConfig, description="See [inbound].")
    leads: LeadsConfig = Field(default_factory=LeadsConfig, description="See [leads].")
    outbound: OutboundConfig = Field(default_factory=OutboundConfig, description="See [outbound].")
    mail: MailConfig = Field(default_factory=MailConfig, description="See [mail].")
    tasks: TasksConfig = Field(default_factory=TasksConfig, description="See [tasks].")

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        problems = cross_check(
            lines=list(enumerate(self.lines)),
            agents=list(enumerate(self.agents)),
            websocket=self.websocket,
            http=self.http,
            site=self.site,
            outbound=self.outbound,
            inbound=self.inbound,
        )
        if problems:
            raise ValueError("; ".join(f"{format_path(p)}: {m}" for p, m in problems))
        return self

    def lines_by_role(self, role: LineRole | str) -> tuple[LineConfig, ...]:
        """Return the lines of ``role``, in file order."""
        wanted = LineRole(role)
        return tuple(line for line in self.lines if line.role is wanted)

    def line(self, extension: str) -> LineConfig:
        """Return the line with ``extension``; raise ``KeyError`` if none is declared."""
        for line in self.lines:
            if line.extension == extension:
                return line
        raise KeyError(extension)

    def agent(self, name: str) -> AgentConfig:
        """Return the agent whose CRM user name (or, failing that, whose name) is
        ``name``; raise ``KeyError`` if none is configured.

        A user name wins over a name: an agent named like another's user is
        reached by its own user name or key only.
        """
        for agent in self.agents:
            if agent.user == name:
                return agent
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(name)

    def agent_for_line(self, extension: str) -> AgentConfig | None:
        """Return the agent working through line ``extension``, or ``None``."""
        for agent in self.agents:
            if agent.line == extension:
                return agent
        return None
