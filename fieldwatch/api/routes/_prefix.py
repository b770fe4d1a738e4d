"""Where the versioned API lives. Each router carries the full prefix itself, so a matched
route's ``path`` is the whole template (what metrics label requests by)."""

API_PREFIX = "/api/v1"
