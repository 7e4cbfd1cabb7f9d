"""The lab fixtures, imported rather than declared with ``pytest_plugins``.

pytest accepts ``pytest_plugins`` only in the root conftest; importing the fixtures
keeps this directory self-contained.
"""

from lab.pytest_plugin import lab, lab_extensions, lab_phones

__all__ = ["lab", "lab_extensions", "lab_phones"]
