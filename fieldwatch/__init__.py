"""fieldwatch: equipment telemetry to dispatched service work.

The application floor: the ``fieldwatch`` command, server assembly, the HTTP API and the demo.
The version has one source, ``pyproject.toml``; installed metadata carries it here.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fieldwatch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
