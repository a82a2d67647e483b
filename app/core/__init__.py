"""The pure core: states, schedules, outcomes and fingerprints.

Nothing in here does I/O, touches asyncio, a database or an HTTP client; time
and randomness are arguments, so every policy is testable without sleeping.
"""
