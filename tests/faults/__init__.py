"""Fault-injection suite: real worker processes, real servers, injected failures.

Every test runs against each backend that has a harness (see ``harness.py`` and the
fixtures in ``conftest.py``); a new backend joins by adding a ``<name>_backend`` fixture
and its name to ``PROCESS_BACKENDS``.
"""
