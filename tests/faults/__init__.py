"""The fault harness: real processes, real sockets and real servers that misbehave.

Version 2 of the contract names faults the gateway survives; these helpers
make each of them happen on purpose, inside an ordinary pytest run, with a
deadline on every wait and everything stopped at teardown.

- ``postgres.PrivatePostgres`` (fixtures ``private_postgres`` and
  ``private_postgres_factory``): a Postgres server of the test's own, in a
  temporary folder on a free port, that a test may ``stop()`` (fast or
  immediate) and ``start()`` again on the same port and data. It makes
  migrated or empty databases, holds a transaction open as a starting gate
  (``holding()``, with ``lock_waiters()`` to see who queues behind it), and
  reads its own log and statistics so that a test can state "no lock waits,
  no deadlocks".
- ``clock.faketime_env(skew_s)``: the environment that runs a process with its
  wall clock skewed (Debian's libfaketime) while its monotonic clock, and so
  asyncio's timers, stay true. ``GatewayProcess(..., clock_skew_s=60)`` and
  the ``replica_factory`` fixture start ``csjd serve`` that way, against any
  database URL.
- ``targets.HostileTarget``: webhook targets on real sockets that answer
  binary bytes (NUL bytes included), bytes that are not HTTP at all, or
  nothing, and count the requests they saw per ``webhook-id``.
- ``sqlite_lock.SqliteWriteLock``: a second process that holds a SQLite
  database's write lock (``BEGIN IMMEDIATE``) for a while, as another writer
  would.

The Postgres and faketime helpers skip their tests when the binaries are
missing, except under ``CI=true`` (``.ci/run`` installs them), where they fail.
"""
