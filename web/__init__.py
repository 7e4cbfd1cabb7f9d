"""Switchboard web package."""
