"""fieldwatch ticketing package."""
