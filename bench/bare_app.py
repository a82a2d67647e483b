"""The intake ceiling: a bare FastAPI app with one ``POST /jobs``, under uvicorn.

It reads the request body and answers ``202`` with a small JSON body (an
``id`` and a ``state``, serialized with orjson as csjd's routes do), and does
nothing else: no validation, no storage, no dispatcher. The benchmark runs
it in its own process the way ``csjd serve`` runs (``uvicorn.Server`` with the
default loop and HTTP implementation, ``log_config=None``,
``access_log=False``) and drives it with the same load generator, so
``accepted_per_s / bare_fastapi_post_per_s`` is the share of the framework's
ceiling that csjd's intake keeps. ``GET /readyz`` exists only so the benchmark
can wait for it to start.

Usage: ``python bench/bare_app.py --port 8766 [--host 127.0.0.1]``
"""

from __future__ import annotations

import argparse
import itertools

import orjson
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

app = FastAPI()
_ids = itertools.count(1)


@app.post("/jobs", status_code=202)
async def create_job(request: Request) -> Response:
    await request.body()
    body = {"id": f"bare-{next(_ids)}", "state": "queued"}
    return Response(orjson.dumps(body), status_code=202, media_type="application/json")


@app.get("/readyz")
async def readyz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_config=None, access_log=False, lifespan="on"
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
