"""fieldwatch simulators package."""
