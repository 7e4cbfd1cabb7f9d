"""Switchboard's telephony lab: Kamailio, simulated customers and agent phones on loopback.

Start one with :meth:`lab.runner.Lab.start` (or ``python -m lab up``); see docs/lab.md.
"""

from lab._ports import free_port_block
from lab.customers import Behaviour, CustomerCall, Customers, SeenInvite, customer_number
from lab.pbx import Pbx, PbxError
from lab.phones import LabPhone, OutgoingCall, PhoneError, PhoneEvent, PhoneSpec
from lab.runner import Lab

__all__ = [
    "Behaviour",
    "CustomerCall",
    "Customers",
    "Lab",
    "LabPhone",
    "OutgoingCall",
    "Pbx",
    "PbxError",
    "PhoneError",
    "PhoneEvent",
    "PhoneSpec",
    "SeenInvite",
    "customer_number",
    "free_port_block",
]
