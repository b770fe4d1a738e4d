"""fieldwatch gateway package."""
