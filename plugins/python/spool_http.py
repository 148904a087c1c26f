"""Outgoing HTTP for Spool plugins in Python, with failures turned into job errors.

For components built against the `connected-plugin` world of Spool's `wit/` (which imports
`wasi:http/outgoing-handler` and `wasi:config/store`). Copy this file next to your app:

    from spool_http import post_json

    response = post_json(f"{api_base}/send", {"to": to}, bearer=store.get("api_key"))

`post_json` raises `Err(job-error)`, which the host reads as the handler's error:

| what happened                                       | job error                              |
|-----------------------------------------------------|----------------------------------------|
| a 2xx or 3xx answer                                 | none: the `Response` is returned       |
| 429, or any 5xx                                     | retry (after `Retry-After` seconds)    |
| any other 4xx                                       | fail                                   |
| the host refused the request (not granted)          | fail, naming the URL                   |
| no connection, a timeout, a DNS failure             | retry                                  |

`request` sends any method and returns the answer whatever its status; `job_error` is the
status mapping on its own. Calls block the handler (no asyncio); bodies are sent and read
whole, in memory; `Retry-After` is honoured in its seconds form only.
"""

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as http
from wit_world.imports.spool_job_types import (
    JobError,
    JobError_Fail,
    JobError_Retry,
    RetryError,
)

# How much of an error answer's body is quoted in the job's error.
QUOTED_BODY = 200
# Bytes written per blocking call (wasi:io guarantees at least 4096).
WRITE_CHUNK = 4096

METHODS = {
    "GET": http.Method_Get,
    "POST": http.Method_Post,
    "PUT": http.Method_Put,
    "PATCH": http.Method_Patch,
    "DELETE": http.Method_Delete,
}


@dataclass
class Response:
    """An answer: status, headers (names in lower case) and the whole body."""

    method: str
    url: str
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        """The body decoded from JSON."""
        return json.loads(self.body)


def post_json(url: str, value: object, bearer: str | None = None) -> Response:
    """POST `value` as JSON to `url`; raises `Err(job-error)` for a failure (see the module)."""
    headers = [("content-type", "application/json")]
    if bearer is not None:
        headers.append(("authorization", f"Bearer {bearer}"))
    response = request("POST", url, headers, json.dumps(value).encode())
    error = job_error(response)
    if error is not None:
        raise Err(error)
    return response


def request(
    method: str, url: str, headers: list[tuple[str, str]] = (), body: bytes = b""
) -> Response:
    """Send a request through wasi:http and wait for the whole answer, whatever its status.

    Raises `Err(job-error)` only when the request cannot be made: refused by the queue's grants
    (fail), or no connection, a timeout, a DNS failure (retry).
    """
    try:
        return _exchange(method, url, headers, body)
    except Err as e:
        if isinstance(e.value, http.ErrorCode_HttpRequestDenied):
            raise Err(
                JobError_Fail(
                    f"{method} {url} refused by the host: the http grants of this job's queue "
                    f"do not allow it"
                )
            )
        raise Err(JobError_Retry(RetryError(f"{method} {url} failed: {e.value!r}", None)))


def job_error(response: Response) -> JobError | None:
    """The job error an answer calls for: none below 400, retry for 429 and 5xx, else fail."""
    if response.status < 400:
        return None
    message = f"{response.method} {response.url} answered {response.status}"
    quoted = " ".join(response.body.decode(errors="replace").split())
    if quoted:
        cut = quoted[:QUOTED_BODY]
        message += f": {cut}..." if len(quoted) > QUOTED_BODY else f": {cut}"
    if response.status == 429 or response.status >= 500:
        after = response.headers.get("retry-after", "").strip()
        after_ms = int(after) * 1000 if after.isdigit() else None
        return JobError_Retry(RetryError(message, after_ms))
    return JobError_Fail(message)


def _exchange(method: str, url: str, headers, body: bytes) -> Response:
    parts = urlsplit(url)
    headers = list(headers)
    # A known length rather than a chunked body: some APIs refuse chunked requests.
    if body and not any(name.lower() == "content-length" for name, _ in headers):
        headers.append(("content-length", str(len(body))))
    fields = http.Fields.from_list([(name, value.encode()) for name, value in headers])
    outgoing = http.OutgoingRequest(fields)
    outgoing.set_method(METHODS[method]())
    outgoing.set_scheme(http.Scheme_Https() if parts.scheme == "https" else http.Scheme_Http())
    outgoing.set_authority(parts.netloc)
    outgoing.set_path_with_query(parts.path + (f"?{parts.query}" if parts.query else ""))
    outgoing_body = outgoing.body()
    future = outgoing_handler.handle(outgoing, None)
    try:
        with outgoing_body.write() as sink:
            for start in range(0, len(body), WRITE_CHUNK):
                sink.blocking_write_and_flush(body[start : start + WRITE_CHUNK])
        http.OutgoingBody.finish(outgoing_body, None)
    except Err:
        # The host stopped taking the body (it refused the request, or the connection
        # failed): the response future below says why.
        pass
    with future:
        with future.subscribe() as ready:
            ready.block()
        answer = future.get()
    if answer is None or isinstance(answer, Err):
        raise Err(http.ErrorCode_InternalError("the response was already taken"))
    if isinstance(answer.value, Err):
        raise answer.value
    with answer.value.value as incoming:
        status = incoming.status()
        with incoming.headers() as received:
            names = {name.lower(): value.decode("latin-1") for name, value in received.entries()}
        incoming_body = incoming.consume()
    chunks = []
    with incoming_body.stream() as source:
        while True:
            try:
                chunks.append(source.blocking_read(16384))
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise
    http.IncomingBody.finish(incoming_body).__exit__(None, None, None)
    return Response(method, url, status, names, b"".join(chunks))
