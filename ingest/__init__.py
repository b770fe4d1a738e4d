"""fieldwatch ingest package."""
