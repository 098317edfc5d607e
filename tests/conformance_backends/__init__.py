"""One module per backend, used by the conformance suite (``tests/conformance``).

Each ``conformance_backends/<name>.py`` exposes:

* ``MARKS``: pytest marks applied to every conformance test of that backend
  (e.g. ``[pytest.mark.services]`` for backends that need a network server);
* ``backend_kwargs(request)``: an async context manager yielding the keyword arguments for
  ``Pyncette(...)`` (``repository_factory`` plus that backend's settings), isolated per test
  (a fresh table, namespace or database) and cleaned up afterwards;
* ``store_raw_spec(kwargs, repository, entry_name, text)``: overwrites a stored spec through the
  backend's own storage (a hand edit, a row of another version), for the quarantine tests;
* optionally ``store_raw_time(kwargs, repository, entry_name, text)``: the same for the stored next
  time, on backends that store times as text (others skip that test).
"""
