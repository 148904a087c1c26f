// `email-js`: the demo job in JavaScript, a mail sender whose payload picks how it behaves. The
// same modes as the Rust `email` plugin (`plugins/email`), against the same `wit/` (world
// `connected-plugin`):
//
// | mode     | what happens                                                                 |
// |----------|------------------------------------------------------------------------------|
// | `ok`     | succeeds on the first attempt                                                |
// | `flaky`  | attempt 1 is a retryable error, attempt 2 and later succeed                  |
// | `fail`   | every attempt is a retryable error ("smtp server unavailable")               |
// | `reject` | permanent error at once ("invalid recipient ...")                            |
// | `hang`   | saves checkpoint `{"stage": "connected", ..}`, then waits `delay_ms`         |
// |          | (default 8000) on a timer (the component blocks in the host's WASI poll),    |
// |          | then sends                                                                   |
// | `spin`   | saves the same checkpoint, then spins in a busy loop for `delay_ms`, then    |
// |          | sends                                                                        |
// | `noop`   | payload `"noop"`: succeeds at once with empty output, for the benchmark    |
//
// Sending: when the queue's config sets `api_base`, a run that gets to send POSTs
// `{"to", "job", "attempt"}` as JSON to `{api_base}/send` with `fetch` (which ComponentizeJS
// maps onto wasi:http), with `Authorization: Bearer <api_key>` when the `api_key` secret is set;
// a 429 or 5xx answer is a retryable error (after `Retry-After` seconds when given), any other
// 4xx a permanent one; a request that could not be made is retried (and one the queue's grants
// refuse traps ComponentizeJS's engine: a failed attempt too). Without `api_base` the send is
// only pretended.
//
// Payload: `{"to": string, "mode"?: string, "delay_ms"?: number}`. Every run but `noop` first
// logs `info` "sending email" with fields `to`, `mode` and `attempt`. Success output:
// `{"sent_to": to, "attempt": n}`. A thrown `{ tag, val }` is the WIT `job-error`.

import { log, checkpoint } from "spool:job/host@0.2.0";
import { get as configGet } from "wasi:config/store@0.2.0-rc.1";

const MODES = ["ok", "flaky", "fail", "reject", "hang", "spin"];
const DEFAULT_HANG_MS = 8000;
// The benchmark's payload: the JSON string "noop".
const NOOP = '"noop"';
// How much of an error answer's body is quoted in the job's error.
const QUOTED_BODY = 200;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function retry(message) {
  return { tag: "retry", val: { message, retryAfterMs: undefined } };
}

// Send through the mail API the queue configures, or pretend to when it configures none.
async function sendEmail(job, to) {
  const apiBase = configGet("api_base");
  if (apiBase === undefined) {
    return;
  }
  const url = `${apiBase.replace(/\/+$/, "")}/send`;
  const headers = { "content-type": "application/json" };
  const apiKey = configGet("api_key");
  if (apiKey !== undefined) {
    headers.authorization = `Bearer ${apiKey}`;
  }
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers,
      body: JSON.stringify({ to, job: job.id, attempt: job.attempt }),
    });
  } catch (e) {
    // The engine reports a request that could not be made (no connection, a timeout) as a
    // "NetworkError" without wasi:http's error code: retried. (A request the queue's grants
    // refuse traps the engine instead; the host's log of the attempt names the URL.)
    throw retry(`POST ${url} failed: ${e?.message ?? e}`);
  }
  const body = (await response.text()).split(/\s+/).filter(Boolean).join(" ");
  if (response.status < 400) {
    return;
  }
  let message = `POST ${url} answered ${response.status}`;
  if (body) {
    message += `: ${body.slice(0, QUOTED_BODY)}${body.length > QUOTED_BODY ? "..." : ""}`;
  }
  if (response.status === 429 || response.status >= 500) {
    const after = (response.headers.get("retry-after") ?? "").trim();
    const afterMs = /^[0-9]+$/.test(after) ? BigInt(after) * 1000n : undefined;
    throw { tag: "retry", val: { message, retryAfterMs: afterMs } };
  }
  throw { tag: "fail", val: message };
}

async function handle(job) {
  if (decoder.decode(job.payload) === NOOP) {
    return new Uint8Array();
  }
  let email;
  try {
    email = JSON.parse(decoder.decode(job.payload));
  } catch (e) {
    throw { tag: "invalid-payload", val: `bad payload: ${e}` };
  }
  const to = email?.to;
  const mode = email?.mode ?? "ok";
  const delayMs = email?.delay_ms ?? DEFAULT_HANG_MS;
  if (typeof to !== "string") {
    throw { tag: "invalid-payload", val: "to: missing or not a string" };
  }
  if (!MODES.includes(mode)) {
    throw { tag: "invalid-payload", val: `mode: unknown mode ${JSON.stringify(mode)}` };
  }

  log("info", "sending email", [
    ["to", to],
    ["mode", mode],
    ["attempt", String(job.attempt)],
  ]);
  if (mode === "flaky" && job.attempt <= 1) {
    throw retry("smtp connection reset (flaky: first attempt fails)");
  }
  if (mode === "fail") {
    throw retry("smtp server unavailable");
  }
  if (mode === "reject") {
    throw { tag: "fail", val: `invalid recipient ${JSON.stringify(to)}` };
  }
  if (mode === "hang" || mode === "spin") {
    const stage = { stage: "connected", attempt: job.attempt };
    checkpoint(encoder.encode(JSON.stringify(stage)));
    log("info", "waiting for the smtp server", [["delay_ms", String(delayMs)]]);
    if (mode === "hang") {
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    } else {
      const end = Date.now() + delayMs;
      let n = 0;
      while (Date.now() < end) {
        n += 1;
      }
    }
  }
  await sendEmail(job, to);
  return encoder.encode(JSON.stringify({ sent_to: to, attempt: job.attempt }));
}

export const handler = { handle };
