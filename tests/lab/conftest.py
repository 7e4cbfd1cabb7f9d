"""The lab fixtures, imported rather than declared with ``pytest_plugins``.

pytest accepts ``pytest_plugins`` only in the root conftest; importing the fixtures
keeps this directory self-contained.
"""

from lab.pytest_plugin import lab, lab_b2bua_lines, lab_extensions, lab_pbx_mode, lab_phones

__all__ = ["lab", "lab_b2bua_lines", "lab_extensions", "lab_pbx_mode", "lab_phones"]
