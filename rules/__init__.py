"""fieldwatch rules package."""
