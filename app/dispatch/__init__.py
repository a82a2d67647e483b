"""Dispatch: claiming due jobs and delivering them through the ``Sender`` seam."""
