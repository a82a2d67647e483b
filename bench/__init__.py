"""The end-to-end benchmark behind ``make bench``: real processes, real
sockets. ``run.py`` is the entry point and ``cli`` runs the chosen scenarios;
``harness`` holds what they share and ``scenarios`` has one module per
scenario. ``http1.py`` (the lean HTTP/1.1 client and server), ``sink.py`` (the
webhook target) and ``bare_app.py`` (the intake ceiling) are also run as
scripts in processes of their own, where this package is not imported.
``bench/README.md`` says what every scenario does and every field it prints.
"""
