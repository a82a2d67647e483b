// Register a target, POST a job with an Idempotency-Key (twice: the replay must
// name the same job) and poll it to `succeeded`, through a client generated
// from csjd's openapi.yaml: openapi-typescript gives the `paths` types,
// openapi-fetch the typed calls.
//
//   CSJD_URL=http://127.0.0.1:8080 CSJD_TOKEN=… CSJD_TARGET_URL=https://example.test/hook \
//     node build/smoke.js
//
// Prints the finished job as JSON; exits non-zero on anything unexpected.

import { setTimeout as sleep } from "node:timers/promises";

import createClient from "openapi-fetch";

import type { components, paths } from "./src/generated/schema.js";

type Job = components["schemas"]["JobOut"];

function setting(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    throw new Error(`${name} is not set`);
  }
  return value;
}

const baseUrl = setting("CSJD_URL", "http://127.0.0.1:8080");
const token = process.env["CSJD_TOKEN"];
const targetUrl = setting("CSJD_TARGET_URL");
const target = setting("CSJD_TARGET", "smoke-ts");
const key = setting("CSJD_IDEMPOTENCY_KEY", `smoke-ts-${Date.now()}`);
const deadlineS = Number(setting("CSJD_DEADLINE_S", "30"));

const client = createClient<paths>({
  baseUrl,
  headers: token ? { Authorization: `Bearer ${token}` } : {},
});

function fail(what: string, response: Response, error: unknown): never {
  throw new Error(`${what}: HTTP ${response.status} ${JSON.stringify(error)}`);
}

async function main(): Promise<Job> {
  const put = await client.PUT("/targets/{name}", {
    params: { path: { name: target } },
    body: { url: targetUrl },
  });
  if (put.error !== undefined) fail("PUT /targets", put.response, put.error);

  const submit = () =>
    client.POST("/jobs", {
      params: { header: { "Idempotency-Key": key } },
      body: { target, payload: { order: key, amount: 42 } },
    });
  const first = await submit();
  if (first.error !== undefined) fail("POST /jobs", first.response, first.error);
  const replay = await submit();
  if (replay.error !== undefined) fail("POST /jobs (replay)", replay.response, replay.error);
  if (replay.data.id !== first.data.id) {
    throw new Error(`the replay made a second job: ${first.data.id} then ${replay.data.id}`);
  }
  if (replay.response.headers.get("Idempotent-Replayed") !== "true") {
    throw new Error("the replay was not marked Idempotent-Replayed");
  }

  const deadline = Date.now() + deadlineS * 1000;
  for (;;) {
    const got = await client.GET("/jobs/{job_id}", {
      params: { path: { job_id: first.data.id } },
    });
    if (got.error !== undefined) fail("GET /jobs/{id}", got.response, got.error);
    const job = got.data;
    if (job.state === "succeeded") return job;
    if (job.state === "failed" || job.state === "cancelled") {
      throw new Error(`job ended ${job.state}: ${JSON.stringify(job)}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`job still ${job.state} after ${deadlineS}s: ${JSON.stringify(job)}`);
    }
    await sleep(100);
  }
}

const job = await main();
console.log(JSON.stringify(job));
