"""What several test modules need, in one place (and nothing here ships: the packages stay test-free).

Timing and resources
    waits        ``wait_until`` / ``wait_until_async``: a condition with a deadline instead of a sleep;
                 on timeout an AssertionError names what was awaited and the last value seen
    clocks       ``FakeClock``: monotonic ``t`` and wall ``time()``, moved by ``advance``
    ports        ``free_port`` (to listen on), ``closed_port`` (refuses connections all session)
    names        ``new_uid``, ``site_and_gateway``: unique names on the shared services

Services
    db           the conftest database fixtures' logic (admin URL, migrated template, a fresh
                 database per test), ``scalar``, and ``PrivatePostgres`` for restart tests
    mqtt         the shared broker's URL and check, ``publisher``, ``listener``, ``Watcher``,
                 ``ResendingPublisher``, ``forget_session``, the retained-status cleanup
    brokers      ``PrivateMosquitto``: a broker of the test's own (persistence, queue depth,
                 password/ACL files, extra config lines; start, stop, kill, restart, reload,
                 autosaves seen); the benches use it too
    acker        ``Acker``: plays ingest for one gateway on any broker (records batches, acks them)

Domain fixtures and builders
    api          a seeded fleet over plain SQL, tokens, a started API client
    registry     registry rows for one test (client, site, gateway, devices) and its batches
    points       ``Point`` as ingest's after-commit hook hands readings to rules and ticketing
    validation   a fixed registry snapshot, limits and "now" for the pure ingest checks
    gateways     a gateway's config, a pump to poll, fixtures ``names``, ``sim``, ``watcher``
    serial_line  fixtures ``pty_pair`` (socat) and ``serial_pump`` for Modbus RTU
    scripted_modbus  ``ScriptedServer``: a Modbus TCP server that answers as the test scripts it
    hot_bearing  a plant with one threshold rule: seed, readings, alarms
    anomaly      pump-physics runs stored as telemetry, anomaly scores read back
    dispatch     the two-pump, two-technician dispatch world at a fixed ``NOW`` (fixture ``world``)
    webhooks     a real local HTTP receiver that checks signatures (fixture ``receiver``), a TLS one
                 (``tls_receiver``), a silent port, a DNS stand-in and the allow-list for them

Fixtures defined here are bound in the test modules that use them
(``names, sim, watcher = gateways.names, gateways.sim, gateways.watcher``); tests/conftest.py
holds only the suite-wide fixtures, and they delegate to ``db``, ``mqtt`` and ``names``.
"""
