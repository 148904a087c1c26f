"""`email-py`: the demo job in Python, a mail sender whose payload picks how it behaves.

The same modes as the Rust `email` plugin (`plugins/email`), against the same `wit/` (world
`connected-plugin`):

| mode     | what happens                                                                 |
|----------|------------------------------------------------------------------------------|
| `ok`     | succeeds on the first attempt                                                |
| `flaky`  | attempt 1 is a retryable error, attempt 2 and later succeed                  |
| `fail`   | every attempt is a retryable error ("smtp server unavailable")               |
| `reject` | permanent error at once ("invalid recipient ...")                            |
| `hang`   | saves checkpoint `{"stage": "connected", ..}`, then blocks in `time.sleep`   |
|          | for `delay_ms` (default 8000), then sends                                    |
| `spin`   | saves the same checkpoint, then spins in a busy loop for `delay_ms`, then    |
|          | sends                                                                        |
| `noop`   | payload `"noop"`: succeeds at once with empty output, for the benchmark      |

Sending: when the queue's config sets `api_base`, a run that gets to send POSTs
`{"to", "job", "attempt"}` as JSON to `{api_base}/send` (with `Authorization: Bearer <api_key>`
when the `api_key` secret is set); a 429 or 5xx answer is a retryable error (after `Retry-After`
seconds when given), any other 4xx a permanent one, and so is a request the queue's grants
refuse (`spool_http.py`, next to this file, makes the request). Without `api_base` the send is
only pretended.

Payload: `{"to": str, "mode"?: str, "delay_ms"?: int}`. Every run but `noop` first logs `info`
"sending email" with fields `to`, `mode` and `attempt`. Success output:
`{"sent_to": to, "attempt": n}`.
"""

import json
import time

from wit_world import exports
from componentize_py_types import Err
from spool_http import post_json
from wit_world.imports import host, store
from wit_world.imports.spool_job_types import (
    Job,
    JobError_Fail,
    JobError_InvalidPayload,
    JobError_Retry,
    Level,
    RetryError,
)

MODES = ("ok", "flaky", "fail", "reject", "hang", "spin")
DEFAULT_HANG_MS = 8000
# The benchmark's payload: the JSON string "noop".
NOOP = b'"noop"'


def send_email(job: Job, to: str) -> None:
    """Send through the mail API the queue configures, or pretend to when it configures none."""
    api_base = store.get("api_base")
    if api_base is None:
        return
    url = api_base.rstrip("/") + "/send"
    post_json(url, {"to": to, "job": job.id, "attempt": job.attempt}, store.get("api_key"))


class Handler(exports.Handler):
    def handle(self, job: Job) -> bytes:
        if job.payload == NOOP:
            return b""
        try:
            email = json.loads(job.payload)
            to = email["to"]
            mode = email.get("mode", "ok")
            delay_ms = int(email.get("delay_ms", DEFAULT_HANG_MS))
        except (ValueError, KeyError, TypeError) as e:
            raise Err(JobError_InvalidPayload(f"bad payload: {e!r}"))
        if not isinstance(to, str):
            raise Err(JobError_InvalidPayload("to: not a string"))
        if mode not in MODES:
            raise Err(JobError_InvalidPayload(f"mode: unknown mode {mode!r}"))

        host.log(
            Level.INFO,
            "sending email",
            [("to", to), ("mode", mode), ("attempt", str(job.attempt))],
        )
        if mode == "flaky" and job.attempt <= 1:
            raise Err(
                JobError_Retry(
                    RetryError("smtp connection reset (flaky: first attempt fails)", None)
                )
            )
        if mode == "fail":
            raise Err(JobError_Retry(RetryError("smtp server unavailable", None)))
        if mode == "reject":
            raise Err(JobError_Fail(f"invalid recipient {to!r}"))
        if mode in ("hang", "spin"):
            stage = {"stage": "connected", "attempt": job.attempt}
            host.checkpoint(json.dumps(stage).encode())
            host.log(Level.INFO, "waiting for the smtp server", [("delay_ms", str(delay_ms))])
            if mode == "hang":
                time.sleep(delay_ms / 1000)
            else:
                end = time.monotonic() + delay_ms / 1000
                n = 0
                while time.monotonic() < end:
                    n += 1
        send_email(job, to)
        return json.dumps({"sent_to": to, "attempt": job.attempt}).encode()
