"""csjd: a production-safe HTTP job gateway.

Producers POST jobs with an ``Idempotency-Key``; csjd stores them durably and
delivers them to registered webhook targets with bounded, leased, retried
dispatch. ``app.gateway.Gateway`` is the composition root; ``app.main.create_app``
serves it over ASGI.
"""

__version__ = "0.1.0"
