"""csjd: a production-safe HTTP job gateway.

Producers POST jobs with an ``Idempotency-Key``; csjd stores them durably and
delivers them to registered webhook targets with bounded, leased, retried
dispatch. ``app.main.create_app`` is the composition root.
"""

__version__ = "0.1.0"
