"""Typed events and the in-process bus that carries them.

Producers (the SIP pool, the dialer) publish :mod:`bus.events` dataclasses;
consumers (the websocket gateway, the MQTT bridge, the store writer) subscribe
with their own bounded queue. Between hosts, :mod:`bus.mqtt` publishes a
daemon's bus to the broker and :mod:`bus.feed` relays every daemon's events
from it into a scale-out gateway's bus.
"""

from ._bus import Bus, Subscription
from .codec import CodecError, UnknownEventType, decode, encode
from .events import (
    EVENT_TYPES,
    AgentStateChanged,
    CallAnswered,
    CallBridged,
    CallCreated,
    CallDialing,
    CallDtmf,
    CallEnded,
    CallHeld,
    CallRinging,
    CallSupervised,
    CallTransferred,
    DialerDialing,
    DialerGap,
    DialerItemClaimed,
    DialerItemSkipped,
    DialerResult,
    DialerSessionFinished,
    DialerSessionPaused,
    DialerSessionResumed,
    DialerSessionStarted,
    DialerSessionStopped,
    Envelope,
    Event,
    EventsDropped,
    RecordingReady,
    RegistrationChanged,
    WorkerCrashed,
    WorkerStarted,
)
from .exceptions import BusError, FeedUnavailable, SubscriptionClosed
from .mqtt import CommandError, MqttBridge

__all__ = [
    "EVENT_TYPES",
    "AgentStateChanged",
    "Bus",
    "BusError",
    "CallAnswered",
    "CallBridged",
    "CallCreated",
    "CallDialing",
    "CallDtmf",
    "CallEnded",
    "CallHeld",
    "CallRinging",
    "CallSupervised",
    "CallTransferred",
    "CodecError",
    "CommandError",
    "DialerDialing",
    "DialerGap",
    "DialerItemClaimed",
    "DialerItemSkipped",
    "DialerResult",
    "DialerSessionFinished",
    "DialerSessionPaused",
    "DialerSessionResumed",
    "DialerSessionStarted",
    "DialerSessionStopped",
    "Envelope",
    "Event",
    "EventsDropped",
    "FeedUnavailable",
    "MqttBridge",
    "RecordingReady",
    "RegistrationChanged",
    "Subscription",
    "SubscriptionClosed",
    "UnknownEventType",
    "WorkerCrashed",
    "WorkerStarted",
    "decode",
    "encode",
]
