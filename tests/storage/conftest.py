"""The storage contract's fixtures (a fresh store of each backend), for every module here."""

from tests.storage.test_store_contract import database_url, open_store, store

__all__ = ["database_url", "open_store", "store"]
