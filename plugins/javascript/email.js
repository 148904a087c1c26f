// `email-js`: the demo job in JavaScript, a pretend mail sender whose payload picks how it
// behaves. The same modes as the Rust `email` plugin (`plugins/email`), against the same `wit/`:
//
// | mode     | what happens                                                                 |
// |----------|------------------------------------------------------------------------------|
// | `ok`     | succeeds on the first attempt                                                |
// | `flaky`  | attempt 1 is a retryable error, attempt 2 and later succeed                  |
// | `fail`   | every attempt is a retryable error ("smtp server unavailable")               |
// | `reject` | permanent error at once ("invalid recipient ...")                            |
// | `hang`   | saves checkpoint `{"stage": "connected", ..}`, then waits `delay_ms`         |
// |          | (default 8000) on a timer: the component blocks in the host's WASI poll      |
// | `spin`   | saves the same checkpoint, then spins in a busy loop for `delay_ms`          |
// | `noop`   | payload `"noop"`: succeeds at once with empty output, for the benchmark    |
//
// Payload: `{"to": string, "mode"?: string, "delay_ms"?: number}`. Every run but `noop` first
// logs `info` "sending email" with fields `to`, `mode` and `attempt`. Success output:
// `{"sent_to": to, "attempt": n}`. A thrown `{ tag, val }` is the WIT `job-error`.

import { log, checkpoint } from "spool:job/host@0.2.0";

const MODES = ["ok", "flaky", "fail", "reject", "hang", "spin"];
const DEFAULT_HANG_MS = 8000;
// The benchmark's payload: the JSON string "noop".
const NOOP = '"noop"';
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function retry(message) {
  return { tag: "retry", val: { message, retryAfterMs: undefined } };
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
  return encoder.encode(JSON.stringify({ sent_to: to, attempt: job.attempt }));
}

export const handler = { handle };
