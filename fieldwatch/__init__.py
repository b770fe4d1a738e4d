"""fieldwatch: equipment telemetry to dispatched service work."""

__version__ = "0.1.0"
