"""Switchboard's composition root: the command line and the daemon's lifespan.

Everything is wired here and nowhere else; the other packages never import
this one.
"""

from .daemon import Daemon, StartupError

__all__ = ["Daemon", "StartupError"]
