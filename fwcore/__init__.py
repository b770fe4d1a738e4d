"""The foundation every fieldwatch package stands on: nothing here imports a domain package.

Modules (import them one by one: this ``__init__`` imports nothing, so an edge install that
has no database driver can still use the wire contract and the settings):

* :mod:`fwcore.contract` — MQTT topics and payloads between gateways and ingest;
* :mod:`fwcore.settings` — typed settings from the environment, ``.env`` and YAML;
* :mod:`fwcore.events` — the database event channel ``fw_events``: a model per kind, publish, listen;
* :mod:`fwcore.db` — database URLs, waiting for, creating and dropping databases;
* :mod:`fwcore.migrations` — the append-only migrations runner and its checksum lock;
* :mod:`fwcore.paging` — one page of a list query and its total (what domain ``list_*`` return);
* :mod:`fwcore.errors` — NotFound, Conflict, Invalid: what domain functions raise for a request;
* :mod:`fwcore.jobs` — the job protocol and the leader-elected scheduler that runs jobs;
* :mod:`fwcore.auth` — API tokens (hashed), their roles;
* :mod:`fwcore.retry` — backoff delays with a cap and jitter;
* :mod:`fwcore.gctune` — garbage-collector settings for long-running processes.

The layers, top to bottom (``lint-imports`` keeps them so): the application ``fieldwatch``
→ the domains ``gateway``, ``ingest``, ``rules``, ``ticketing``, ``simulators`` → ``fwcore``.
"""
