"""``python -m app`` is the same as the ``csjd`` command."""

from app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
