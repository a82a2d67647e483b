"""The operator's console: ``csjd targets``, ``csjd jobs`` and ``csjd status``.

These commands speak to a running gateway over its HTTP API, as any other
client would; they never open the database. ``parser`` declares the commands
with the standard library only, so that ``csjd serve`` does not pay for httpx
or rich at start-up; ``client`` is the API over httpx, ``views`` draws its
answers with rich, and ``actions`` runs one command from parsed arguments.
"""
