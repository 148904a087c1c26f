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
refuse. Without `api_base` the send is only pretended. Requests go through `wasi:http` with
blocking calls: the body is sent and the answer read whole, in memory.

Payload: `{"to": str, "mode"?: str, "delay_ms"?: int}`. Every run but `noop` first logs `info`
"sending email" with fields `to`, `mode` and `attempt`. Success output:
`{"sent_to": to, "attempt": n}`.
"""

import json
import time
from urllib.parse import urlsplit

from wit_world import exports
from componentize_py_types import Err, Ok
from wit_world.imports import host, outgoing_handler, store, streams
from wit_world.imports import wasi_http_types as http
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
# How much of an error answer's body is quoted in the job's error.
QUOTED_BODY = 200


def post_json(url: str, body: object, bearer: str | None) -> tuple[int, dict[str, str], bytes]:
    """POST `body` as JSON to `url` through wasi:http and return the whole answer.

    Raises `Err(ErrorCode)` when the request cannot be made (refused by the queue's grants, no
    connection, a timeout).
    """
    parts = urlsplit(url)
    headers = [("content-type", b"application/json")]
    if bearer is not None:
        headers.append(("authorization", f"Bearer {bearer}".encode()))
    request = http.OutgoingRequest(http.Fields.from_list(headers))
    request.set_method(http.Method_Post())
    request.set_scheme(http.Scheme_Https() if parts.scheme == "https" else http.Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query(parts.path + (f"?{parts.query}" if parts.query else ""))
    outgoing = request.body()
    future = outgoing_handler.handle(request, None)
    data = json.dumps(body).encode()
    with outgoing.write() as sink:
        for start in range(0, len(data), 4096):
            sink.blocking_write_and_flush(data[start : start + 4096])
    http.OutgoingBody.finish(outgoing, None)
    with future:
        with future.subscribe() as ready:
            ready.block()
        answer = future.get()
    if isinstance(answer, Err) or answer is None:
        raise Err(http.ErrorCode_InternalError("response already taken"))
    if isinstance(answer.value, Err):
        raise answer.value
    with answer.value.value as response:
        status = response.status()
        with response.headers() as fields:
            received = {name.lower(): value.decode("latin-1") for name, value in fields.entries()}
        incoming = response.consume()
    chunks = []
    with incoming.stream() as source:
        while True:
            try:
                chunks.append(source.blocking_read(16384))
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise
    http.IncomingBody.finish(incoming).__exit__(None, None, None)
    return status, received, b"".join(chunks)


def send_email(job: Job, to: str) -> None:
    """Send through the mail API the queue configures, or pretend to when it configures none."""
    api_base = store.get("api_base")
    if api_base is None:
        return
    url = api_base.rstrip("/") + "/send"
    try:
        status, headers, body = post_json(
            url, {"to": to, "job": job.id, "attempt": job.attempt}, store.get("api_key")
        )
    except Err as e:
        if isinstance(e.value, http.ErrorCode_HttpRequestDenied):
            raise Err(
                JobError_Fail(
                    f"POST {url} refused by the host: the http grants of queue {job.queue!r} "
                    f"do not allow it"
                )
            )
        raise Err(JobError_Retry(RetryError(f"POST {url} failed: {e.value!r}", None)))
    if status < 400:
        return
    message = f"POST {url} answered {status}"
    quoted = " ".join(body.decode(errors="replace").split())
    if quoted:
        cut = quoted[:QUOTED_BODY]
        message += f": {cut}..." if len(quoted) > QUOTED_BODY else f": {cut}"
    if status == 429 or status >= 500:
        after = headers.get("retry-after", "").strip()
        after_ms = int(after) * 1000 if after.isdigit() else None
        raise Err(JobError_Retry(RetryError(message, after_ms)))
    raise Err(JobError_Fail(message))


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
