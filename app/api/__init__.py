"""The HTTP edge: routes translate HTTP to store and core calls, errors to problems."""
