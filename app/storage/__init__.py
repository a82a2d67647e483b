"""Storage: the ``JobStore`` seam and the SQL implementation behind it."""
