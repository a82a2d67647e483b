# csjd: the HTTP job gateway, on the embedded SQLite database in /data.
#   docker build -t csjd .
#   docker run --rm -p 8080:8080 -v csjd-data:/data --stop-timeout 30 csjd
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The app finds its alembic/ directory through the working directory.
WORKDIR /app

# Dependencies first, from pyproject.toml alone, so code changes reuse this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md alembic.ini ./
COPY alembic/ ./alembic/
COPY app/ ./app/
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && groupadd --system --gid 10001 csjd \
    && useradd --system --uid 10001 --gid csjd --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin csjd \
    && mkdir -p /data \
    && chown csjd:csjd /data

ENV CSJD_DATABASE_URL=sqlite+aiosqlite:////data/csjd.db
VOLUME ["/data"]

USER csjd
EXPOSE 8080

# No curl in the slim image: ask /healthz with the standard library.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

# SIGTERM drains in-flight deliveries for CSJD_DRAIN_TIMEOUT_S (20 s by default):
# give the container a longer stop timeout than Docker's default 10 s.
STOPSIGNAL SIGTERM
CMD ["csjd", "serve", "--host", "0.0.0.0", "--port", "8080"]
