"""Switchboard sip package."""
