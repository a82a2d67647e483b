// Register a target, POST a job with an Idempotency-Key (twice: the replay must
// name the same job), POST a batch (a new job, the first job again, which is a
// replay, and a job for a target that does not exist, refused alone with 422)
// and poll both new jobs to `succeeded`, through a client generated from
// csjd's openapi.yaml: openapi-typescript gives the `paths` types,
// openapi-fetch the typed calls.
//
//   CSJD_URL=http://127.0.0.1:8080 CSJD_TOKEN=… CSJD_TARGET_URL=https://example.test/hook \
//     node build/smoke.js
//
// The job carries an ordering key, a traceparent and a callback to its own
// target; a schedule is put, read and deleted. Prints the batch's answer, then
// the finished job, one JSON line each; exits non-zero on anything unexpected.

import { setTimeout as sleep } from "node:timers/promises";

import createClient from "openapi-fetch";

import type { components, paths } from "./src/generated/schema.js";

type Job = components["schemas"]["JobOut"];
type BatchOut = components["schemas"]["BatchOut"];
type BatchResult = components["schemas"]["BatchResultOut"];
type Problem = components["schemas"]["Problem"];

// a target name no one registered: its batch item is refused alone
const noTarget = "no-such-target";
// the producer's trace context: its trace id reaches the target with each delivery
const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

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

// A result that must be 202 with its job (a replay or not), and no problem.
function accepted(what: string, result: BatchResult | undefined, replayed: boolean): Job {
  if (result?.status !== 202 || !result.job || result.replayed !== replayed || result.problem) {
    throw new Error(`${what}: ${JSON.stringify(result)}`);
  }
  return result.job;
}

// A result that must be `status` with a problem of `problemType`, and no job.
function refused(
  what: string,
  result: BatchResult | undefined,
  status: number,
  problemType: string,
): Problem {
  const problem = result?.problem;
  if (
    result?.status !== status ||
    result.job ||
    !problem ||
    problem.status !== status ||
    !problem.type.endsWith(`/${problemType}`) ||
    problem.instance !== "/jobs/batch"
  ) {
    throw new Error(`${what}: ${JSON.stringify(result)}`);
  }
  return problem;
}

// A new job, the job `key` made (`first`, replayed), and one for `noTarget`:
// the answer, and the new job.
async function postBatch(first: Job): Promise<[BatchOut, Job]> {
  const posted = await client.POST("/jobs/batch", {
    body: {
      jobs: [
        {
          idempotency_key: `${key}-batch`,
          target,
          payload: { order: `${key}-batch`, amount: 43 },
        },
        {
          idempotency_key: key,
          target,
          payload: { order: key, amount: 42 },
          ordering_key: key,
          callback_target: target,
        },
        { idempotency_key: `${key}-none`, target: noTarget, payload: { order: key } },
      ],
    },
  });
  if (posted.error !== undefined) fail("POST /jobs/batch", posted.response, posted.error);
  const results = posted.data.results;
  if (results.length !== 3) {
    throw new Error(`POST /jobs/batch: 3 jobs sent, ${results.length} results`);
  }
  const created = accepted("the batch's new job", results[0], false);
  if (created.idempotency_key !== `${key}-batch` || created.target !== target) {
    throw new Error(`the batch's new job is not the one sent: ${JSON.stringify(created)}`);
  }
  if (created.id === first.id) throw new Error("the batch's new job is the first job");
  const again = accepted("the batch's replay", results[1], true);
  if (again.id !== first.id) {
    throw new Error(`the batch's replay made a second job: ${first.id} then ${again.id}`);
  }
  const problem = refused("the batch's job for no target", results[2], 422, "unknown-target");
  // what the problem adds beyond RFC 9457's fields is kept beside them
  if (problem["target"] !== noTarget) {
    throw new Error(`the refusal does not name the target: ${JSON.stringify(problem)}`);
  }
  return [posted.data, created];
}

// Poll the job until it has succeeded; fail if it ends otherwise or by `deadline`.
async function succeeded(id: string, deadline: number): Promise<Job> {
  for (;;) {
    const got = await client.GET("/jobs/{job_id}", {
      params: { path: { job_id: id } },
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

async function main(): Promise<[BatchOut, Job]> {
  const put = await client.PUT("/targets/{name}", {
    params: { path: { name: target } },
    body: { url: targetUrl },
  });
  if (put.error !== undefined) fail("PUT /targets", put.response, put.error);

  const submit = () =>
    client.POST("/jobs", {
      params: { header: { "Idempotency-Key": key, traceparent } },
      body: {
        target,
        payload: { order: key, amount: 42 },
        ordering_key: key,
        callback_target: target,
      },
    });
  const first = await submit();
  if (first.error !== undefined) fail("POST /jobs", first.response, first.error);
  if (first.data.ordering_key !== key || first.data.callback_target !== target) {
    throw new Error(`the job lost its ordering key or callback: ${JSON.stringify(first.data)}`);
  }
  const replay = await submit();
  if (replay.error !== undefined) fail("POST /jobs (replay)", replay.response, replay.error);
  if (replay.data.id !== first.data.id) {
    throw new Error(`the replay made a second job: ${first.data.id} then ${replay.data.id}`);
  }
  if (replay.response.headers.get("Idempotent-Replayed") !== "true") {
    throw new Error("the replay was not marked Idempotent-Replayed");
  }

  const [batch, created] = await postBatch(first.data);
  const deadline = Date.now() + deadlineS * 1000;
  const job = await succeeded(first.data.id, deadline);
  await succeeded(created.id, deadline);
  if (!job.callback_job_id) throw new Error(`no callback: ${JSON.stringify(job)}`);
  await succeeded(job.callback_job_id, deadline);
  await scheduleRoundTrip();
  return [batch, job];
}

// Put a schedule, read it back, list it and delete it.
async function scheduleRoundTrip(): Promise<void> {
  const name = `${target}-weekdays`;
  const path = { params: { path: { name } } };
  const put = await client.PUT("/schedules/{name}", {
    ...path,
    body: { cron: "0 9 * * MON-FRI", timezone: "Europe/Paris", target, payload: { report: 1 } },
  });
  if (put.error !== undefined) fail("PUT /schedules", put.response, put.error);
  if (put.response.status !== 201 || !put.data.next_run_at) {
    throw new Error(`PUT /schedules: ${put.response.status} ${JSON.stringify(put.data)}`);
  }
  const got = await client.GET("/schedules/{name}", path);
  if (got.error !== undefined) fail("GET /schedules/{name}", got.response, got.error);
  if (got.data.cron !== "0 9 * * MON-FRI" || got.data.timezone !== "Europe/Paris") {
    throw new Error(`GET /schedules/{name}: ${JSON.stringify(got.data)}`);
  }
  const listed = await client.GET("/schedules");
  if (listed.error !== undefined) fail("GET /schedules", listed.response, listed.error);
  if (!JSON.stringify(listed.data).includes(name)) {
    throw new Error(`GET /schedules does not list ${name}: ${JSON.stringify(listed.data)}`);
  }
  const gone = await client.DELETE("/schedules/{name}", path);
  if (gone.response.status !== 204) {
    throw new Error(`DELETE /schedules/{name}: HTTP ${gone.response.status}`);
  }
}

const [batch, job] = await main();
console.log(JSON.stringify(batch));
console.log(JSON.stringify(job));
