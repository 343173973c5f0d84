"""`fashion-mlp serve`: a real server process on 127.0.0.1, talked to by the official tritonclient, by
plain HTTP with bad requests, and by a real Chromium driven by Playwright."""

import asyncio
import base64
import io
import json
import os
import queue
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the serve extra: pip install -e '.[serve]'")
httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is in the test extra")

from fashion_mlp import checkpoint, data  # noqa: E402
from fashion_mlp.cli import main  # noqa: E402
from fashion_mlp.idx import read_idx  # noqa: E402
from fashion_mlp.nn import Inference  # noqa: E402
from fashion_mlp.serve import protocol  # noqa: E402

MODEL = "small"


@pytest.fixture(scope="module")
def raw_test_images() -> np.ndarray:
    return read_idx(data.locate(allow_download=False).paths["test-images"])[:300]


class Server:
    """A `fashion-mlp serve` process on port 0 of 127.0.0.1. It reports the port it got in its
    'serving ... on http://HOST:PORT/' line; a thread collects its output, so that a full pipe never
    stalls it. Its socket listens before that line is printed, so the URL is usable at once."""

    def __init__(self, checkpoint_path: Path | str, *flags: str, env: dict[str, str] | None = None) -> None:
        """A Path is served as MODEL; a str is passed as it is (a folder, NAME=PATH). Without --port
        among the flags, --port 0, unless ``env`` sets PORT."""
        spec = f"{MODEL}={checkpoint_path}" if isinstance(checkpoint_path, Path) else checkpoint_path
        command = [sys.executable, "-m", "fashion_mlp", "serve", spec]
        if "--port" not in flags and "PORT" not in (env or {}):
            command += ["--port", "0"]
        self.process = subprocess.Popen(
            [*command, *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=None if env is None else {**os.environ, **env},
        )
        self.lines: list[str] = []
        found: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            for line in self.process.stdout:
                self.lines.append(line)
                match = re.search(r"serving .* on (http://127\.0\.0\.1:\d+)/", line)
                if match:
                    found.put(match.group(1))
            found.put(None)

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        try:
            url = found.get(timeout=120)
        except queue.Empty:
            url = None
        if url is None:
            self.process.kill()
            pytest.fail(f"the server did not start: {''.join(self.lines)}")
        self.url = url
        self.address = ("127.0.0.1", int(url.rsplit(":", 1)[1]))

    def stop(self) -> None:
        self.process.terminate()  # SIGTERM: it finishes what is in flight, then exits by that signal
        self.process.wait(timeout=60)
        self.reader.join(timeout=60)
        output = "".join(self.lines)
        assert self.process.returncode in (0, -signal.SIGTERM), output
        assert "Finished server process" in output and "Traceback" not in output, output


@pytest.fixture(scope="module")
def served(small_run):
    server = Server(
        small_run / "best.npz",
        *("--max-body-bytes", "2000000", "--max-rows", "500", "--max-image-pixels", "4000000"),
        *("--max-concurrency", "8", "--read-timeout", "1.5"),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(served):
    return served.url


@pytest.fixture(scope="module")
def tight(small_run):
    """Small limits, to reach each bound with a few requests: 100 kB bodies, 2 KiB heads, a 1.5 s
    read timeout, and a lingering close of 3 s in all, 0.5 s without a byte."""
    server = Server(
        small_run / "best.npz",
        *("--max-body-bytes", "100000", "--max-header-bytes", "2048", "--read-timeout", "1.5"),
        *("--linger-seconds", "3", "--linger-idle-seconds", "0.5"),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def capped(small_run):
    """Two requests in flight and four connections at most, with nothing timing out meanwhile."""
    server = Server(
        small_run / "best.npz",
        *("--max-concurrency", "2", "--max-connections", "4", "--read-timeout", "600"),
        *("--keep-alive", "600"),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def reference(small_run):
    loaded = checkpoint.load(small_run / "best.npz")
    return Inference(loaded.model, **data.NORMALISATION)


def post(url, body: bytes, headers=None):
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# ---------------------------------------------------------------- the official client


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_live_ready_metadata_and_inference(server, reference, raw_test_images, binary):
    client = httpclient.InferenceServerClient(server.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    assert metadata["inputs"][0]["name"] == "pixels" and metadata["outputs"][0]["name"] == "probabilities"
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    pixels = raw_test_images[:64].reshape(64, 784).astype(np.float32)
    tensor = httpclient.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=binary)
        for name in ("probabilities", "label", "class_name")
    ]
    result = client.infer(MODEL, [tensor], outputs=outputs, request_id="req-7")
    expected = reference.predict_proba(pixels)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(result.as_numpy("label"), expected.argmax(axis=1))
    names = [n.decode() if isinstance(n, bytes) else n for n in result.as_numpy("class_name")]
    assert names == [data.CLASS_NAMES[i] for i in expected.argmax(axis=1)]
    assert result.get_response()["id"] == "req-7"


def test_tritonclient_uint8_28x28_and_the_outputs_asked_for(server, reference, raw_test_images):
    client = httpclient.InferenceServerClient(server.removeprefix("http://"))
    images = raw_test_images[:5]  # uint8 (5, 28, 28)
    tensor = httpclient.InferInput("pixels", [5, 28, 28], "UINT8")
    tensor.set_data_from_numpy(images)
    result = client.infer(
        MODEL, [tensor], outputs=[httpclient.InferRequestedOutput("label")], model_version="1"
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    np.testing.assert_array_equal(result.as_numpy("label"), reference.predict(images.reshape(5, 784)))


def test_tritonclient_reads_our_errors(server):
    client = httpclient.InferenceServerClient(server.removeprefix("http://"))
    tensor = httpclient.InferInput("pixels", [1, 10], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 10), np.float32))
    with pytest.raises(Exception, match=r"must have shape \[N, 784\] or \[N, 28, 28\]"):
        client.infer(MODEL, [tensor])


# ---------------------------------------------------------------- bad requests: a 4xx and one line


def infer_body(rows=1, value=0.0, datatype="FP32", shape=None, name="pixels"):
    return json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": shape or [rows, 784],
                    "data": [value] * (rows * 784),
                }
            ]
        }
    ).encode()


BAD = [
    ("malformed JSON", "/v2/models/small/infer", b"{not json", {}, 400, "not valid JSON"),
    ("empty body", "/v2/models/small/infer", b"", {}, 400, "body is empty"),
    ("wrong shape", "/v2/models/small/infer", infer_body(shape=[1, 783]), {}, 400, "must have shape"),
    (
        "wrong datatype",
        "/v2/models/small/infer",
        infer_body(datatype="FP64"),
        {},
        400,
        "must be FP32 or UINT8",
    ),
    (
        "wrong tensor name",
        "/v2/models/small/infer",
        infer_body(name="image"),
        {},
        400,
        "unknown input 'image'",
    ),
    ("NaN", "/v2/models/small/infer", infer_body().replace(b"0.0", b"NaN", 1), {}, 400, "not valid JSON"),
    ("infinity in binary", "/v2/models/small/infer", None, "inf", 400, "NaN or infinity"),
    ("value above 255", "/v2/models/small/infer", infer_body(value=300.0), {}, 400, "outside 0-255"),
    ("too many rows", "/v2/models/small/infer", infer_body(rows=501), {}, 413, "takes at most 500"),
    ("binary data short", "/v2/models/small/infer", None, "short", 400, "carries 3135"),
    ("binary data long", "/v2/models/small/infer", None, "long", 400, "carries 3137"),
    ("unknown model", "/v2/models/other/infer", infer_body(), {}, 404, "unknown model 'other'"),
    ("unknown version", "/v2/models/small/versions/2/infer", infer_body(), {}, 404, "no version '2'"),
    ("a non-image", "/classify", b"this is not a picture", {}, 415, "not a readable PNG or JPEG"),
    ("a truncated image", "/classify", None, "truncated", 415, "not a readable PNG or JPEG"),
    ("a decompression bomb", "/classify", None, "bomb", 413, "more than 4,000,000 pixels"),
    ("an image with nothing in it", "/classify", None, "blank", 422, "blank"),
    ("no image field", "/classify", None, "form-without-image", 400, "field named 'image'"),
    ("bad top_k", "/classify?top_k=11", b"x", {}, 400, "top_k must be an integer from 1 to 10"),
    ("top_k in superscript", "/classify?top_k=%C2%B2", b"x", {}, 400, "top_k must be a whole number"),
    ("header length with a sign", "/v2/models/small/infer", None, "signed", 400, "in ASCII digits"),
]


def binary_request(kind):
    pixels = np.zeros((1, 784), np.float32)
    if kind == "inf":
        pixels[0, 5] = np.inf
    raw = pixels.tobytes()
    raw = raw[:-1] if kind == "short" else raw + b"\0" if kind == "long" else raw
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "datatype": "FP32",
                    "shape": [1, 784],
                    "parameters": {"binary_data_size": 3136},
                }
            ]
        }
    ).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def png_bytes(array):
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


def special_body(kind):
    if kind in ("inf", "short", "long"):
        return binary_request(kind)
    if kind == "signed":  # int() reads "+103" as 103; the protocol's numbers are plain digits
        body, headers = binary_request("inf")
        return body, {"Inference-Header-Content-Length": "+" + headers["Inference-Header-Content-Length"]}
    if kind == "truncated":
        return png_bytes(np.tri(64, dtype=np.uint8) * 255)[:200], {}
    if kind == "bomb":
        return png_bytes(np.zeros((2100, 2100), np.uint8)), {}  # 4.4 M pixels: more than the flag allows
    if kind == "blank":
        return png_bytes(np.full((40, 40), 200, np.uint8)), {}
    if kind == "form-without-image":
        body = b'--XyZ\r\nContent-Disposition: form-data; name="other"\r\n\r\nhello\r\n--XyZ--\r\n'
        return body, {"Content-Type": "multipart/form-data; boundary=XyZ"}
    raise AssertionError(kind)


@pytest.mark.parametrize("what, path, body, extra, status, fragment", BAD, ids=[b[0] for b in BAD])
def test_a_bad_request_gets_a_4xx_and_one_json_line_and_the_server_goes_on(
    server, what, path, body, extra, status, fragment
):
    headers = {}
    if body is None:
        body, headers = special_body(extra)
    code, answer = post(server + path, body, headers)
    assert code == status, (code, answer)
    error = json.loads(answer)["error"]
    assert fragment in error and "\n" not in error and "Traceback" not in error, error
    assert post(server + "/v2/models/small/infer", infer_body())[0] == 200  # and it still answers


# ---------------------------------------------------------------- early answers every client receives

OVER = 2_000_001  # one byte over the server's --max-body-bytes
HUGE = 200 << 20  # 200 MiB: when the lingering close stopped after 64 MiB, clients got a broken pipe


def assert_413(status, body) -> None:
    assert int(status) == 413, (status, body)
    assert "limit is 2,000,000" in json.loads(body)["error"], body


@pytest.mark.parametrize("size", [OVER, HUGE], ids=["2MB", "200MiB"])
def test_urllib_gets_its_413_every_time(server, size):
    body = b" " * size
    for _ in range(5):  # before the lingering close, 30 of 30 ended in a reset instead
        assert_413(*post(server + "/v2/models/small/infer", body))


@pytest.mark.parametrize("size", [OVER, HUGE], ids=["2MB", "200MiB"])
def test_requests_gets_its_413_every_time(server, size):
    requests = pytest.importorskip("requests", reason="requests is in the test extra")
    body = b" " * size
    for _ in range(5):
        answer = requests.post(server + "/v2/models/small/infer", data=body, timeout=120)
        assert answer.headers["connection"] == "close"
        assert_413(answer.status_code, answer.content)


@pytest.mark.parametrize("expect", ["100-continue", "none"])
def test_curl_gets_its_413_every_time(server, tmp_path, expect):
    """curl sends ``Expect: 100-continue`` before a body of over 1 MB: the 413 then comes before the
    body. Without it, curl sends the body at once and the server drains it."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (make test installs it)")
    body = tmp_path / "body"
    body.write_bytes(b" " * OVER)
    extra = [] if expect == "100-continue" else ["-H", "Expect:"]
    for _ in range(3):
        command = ["curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}", *extra]
        answer = subprocess.run(
            [*command, "--data-binary", f"@{body}", server + "/v2/models/small/infer"],
            capture_output=True,
            timeout=120,
        )
        assert answer.returncode == 0, answer.stderr
        payload, status = answer.stdout.rsplit(b"\n", 1)
        assert_413(status, payload)


def test_tritonclient_gets_its_413_every_time(server):
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(server.removeprefix("http://"))
    tensor = httpclient.InferInput("pixels", [700, 784], "FP32")  # 2.2 MB in binary
    tensor.set_data_from_numpy(np.zeros((700, 784), np.float32))
    for _ in range(5):
        with pytest.raises(InferenceServerException) as caught:
            client.infer(MODEL, [tensor])
        assert caught.value.status() == "413" and "limit is 2,000,000" in caught.value.message()
    assert client.is_server_ready()


def connect(server: Server) -> socket.socket:
    return socket.create_connection(server.address, timeout=60)


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it ends its side of the connection (generous timeout)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_a_client_that_expects_100_continue_gets_its_413_before_sending_the_body(tight):
    with connect(tight) as sock:
        sock.sendall(
            b"POST /v2/models/small/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        status, headers, body = response(read_to_end(sock))  # the server ends its side: no body wanted
    assert status == 413 and headers["connection"] == "close", (status, headers)
    assert "limit is 100,000" in json.loads(body)["error"]


def test_a_client_that_expects_100_continue_is_told_to_go_on_when_its_body_fits(tight):
    body = infer_body()
    with connect(tight) as sock:
        sock.sendall(
            b"POST /v2/models/small/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(1)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, answer = response(read_to_end(sock))
    assert status == 200 and "outputs" in json.loads(answer)


def test_a_chunked_body_without_content_length_counts_against_the_cap(server, served):
    with connect(served) as sock:
        sock.sendall(b"POST /v2/models/small/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(40):  # 2.6 MB in 64 KiB chunks
                sock.sendall(b"10000\r\n" + b" " * 0x10000 + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server may close before we finish: its answer is what counts
            pass
        status, headers, body = response(read_to_end(sock))
    assert status == 413 and headers["connection"] == "close"
    assert "over the limit of 2,000,000 bytes" in json.loads(body)["error"]


def send_until_closed(sock: socket.socket, chunk: bytes, most: int, pause: float = 0.0) -> int:
    """Send ``chunk`` again and again until the server closes the connection (a reset), at most
    ``most`` bytes; the bytes sent. ``pause`` between sends makes a trickle."""
    sent = 0
    while sent < most:
        try:
            sock.sendall(chunk)
        except OSError:
            return sent
        sent += len(chunk)
        if pause:
            time.sleep(pause)  # the trickle's pace: no wait for the server
    return sent


def early_413(sock: socket.socket) -> None:
    """Declare a body of a gigabyte, read the 413 that answers it at once and the end of file."""
    sock.sendall(b"POST /v2/models/small/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
    status, headers, _ = response(read_to_end(sock))
    assert status == 413 and headers["connection"] == "close"


def test_after_an_early_answer_the_server_drains_by_time_not_bytes_then_closes(tight):
    with connect(tight) as sock:
        early_413(sock)
        sent = send_until_closed(sock, b" " * 65536, most=1 << 36)  # 64 GiB: minutes at loopback speed
    assert 64 << 20 < sent < 1 << 36  # past the 64 MiB a byte cap stopped at; closed by --linger-seconds 3


def test_after_an_early_answer_a_trickling_client_is_closed_by_the_linger_deadline(tight):
    with connect(tight) as sock:
        early_413(sock)
        sent = send_until_closed(sock, b" ", most=600, pause=0.1)  # a minute of trickle at most
    assert sent < 600  # closed after --linger-seconds 3, though each byte arrived in time


def test_after_an_early_answer_a_client_that_stops_sending_is_closed_by_the_idle_deadline(tight):
    with connect(tight) as sock:
        early_413(sock)
        sent = send_until_closed(sock, b" ", most=600, pause=1.5)  # 15 minutes at most
    # closed after --linger-idle-seconds 0.5 without a byte, long before the 3 s in all: the first
    # send after the close may still succeed, the next one meets the reset
    assert sent <= 2


def test_a_head_that_trickles_is_408_after_the_read_timeout(tight):
    """Each header line arrives well within any idle timeout; the head as a whole does not."""
    with connect(tight) as sock:
        sock.sendall(b"POST /v2/models/small/infer HTTP/1.1\r\n")
        lines = 0
        while lines < 600 and not select.select([sock], [], [], 0.1)[0]:  # no answer yet: one more line
            sock.sendall(b"X-Slow: 1\r\n")
            lines += 1
        status, headers, body = response(read_to_end(sock))
    assert status == 408 and headers["connection"] == "close", (lines, status)
    assert "head took longer than 1.5 s" in json.loads(body)["error"]


def slow_request(server: Server, path: str = "/v2/models/small/infer") -> socket.socket:
    """A request whose body never finishes arriving."""
    sock = connect(server)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{".encode())
    return sock


def test_a_body_slower_than_the_read_timeout_is_408(served):
    with slow_request(served) as sock:
        status, headers, body = response(read_to_end(sock))  # after --read-timeout 1.5 s
    assert status == 408 and headers["connection"] == "close"
    assert "took longer than 1.5 s" in json.loads(body)["error"]


# ---------------------------------------------------------------- caps, stalls and pipelining


def wait_for(condition, what: str, deadline_s: float = 60.0):
    """Poll ``condition`` until it returns something true; fail after a generous deadline."""
    give_up = time.monotonic() + deadline_s
    while time.monotonic() < give_up:
        if result := condition():
            return result
        time.sleep(0.05)  # the polling interval
    pytest.fail(f"waited {deadline_s:g} s for {what}")


def answered(url: str, status: int) -> tuple[int, bytes] | None:
    code, body = post(url + "/v2/models/small/infer", infer_body())
    return (code, body) if code == status else None


def test_past_the_concurrency_cap_a_request_is_503_and_then_served_again(capped):
    wait_for(lambda: answered(capped.url, 200), "the server to answer")
    held = [slow_request(capped) for _ in range(2)]  # --max-concurrency 2: both in flight
    _, body = wait_for(lambda: answered(capped.url, 503), "a 503 while two requests are held")
    assert "busy (2 requests in flight)" in json.loads(body)["error"]
    for sock in held:
        sock.close()
    wait_for(lambda: answered(capped.url, 200), "a 200 once they are gone")


def test_past_the_connection_cap_a_new_connection_is_503_and_then_served_again(capped):
    wait_for(lambda: answered(capped.url, 200), "the server to answer")
    held = [connect(capped) for _ in range(4)]  # --max-connections 4, all idle
    with connect(capped) as extra:
        extra.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = response(read_to_end(extra))
    assert status == 503 and headers["connection"] == "close"
    assert "4 connections open" in json.loads(body)["error"]
    for sock in held:
        sock.close()
    wait_for(lambda: answered(capped.url, 200), "a 200 once they are gone")


@pytest.mark.parametrize("size, status", [(1500, 200), (3000, 431)])
def test_a_head_over_the_header_cap_is_431(tight, size, status):
    with connect(tight) as sock:
        sock.sendall(
            b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
        )
        code, _, body = response(read_to_end(sock))
    assert code == status
    if status == 431:
        assert "over the limit of 2,048 bytes" in json.loads(body)["error"]


def test_a_header_line_that_never_ends_is_431_after_a_bounded_number_of_bytes(tight):
    with connect(tight) as sock:
        sock.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = 0
        while sent < 4_000_000 and not select.select([sock], [], [], 0)[0]:
            sock.sendall(b"a" * 65536)
            sent += 65536
        status, headers, _ = response(read_to_end(sock))
    assert status == 431 and headers["connection"] == "close" and sent < 4_000_000


def test_stalled_and_half_sent_requests_never_stop_others_being_answered(served):
    idle = connect(served)
    half_head = connect(served)
    half_head.sendall(b"POST /v2/models/small/infer HTTP/1.1\r\nHost: x\r\n")
    half_body = slow_request(served)
    try:
        for _ in range(3):
            assert post(served.url + "/v2/models/small/infer", infer_body())[0] == 200
    finally:
        for sock in (idle, half_head, half_body):
            sock.close()


def test_pipelined_requests_are_all_answered_in_order(served):
    def infer(request_id: str) -> bytes:
        body = json.loads(infer_body())
        body["id"] = request_id
        raw = json.dumps(body).encode()
        head = b"POST /v2/models/small/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(raw)
        return head + raw

    with connect(served) as sock:
        sock.sendall(
            infer("first")
            + infer("second")
            + b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        received = read_to_end(sock)
    assert received.count(b"HTTP/1.1 200 OK") == 3, received
    assert received.index(b'"id":"first"') < received.index(b'"id":"second"') < received.index(b'"ready"')


def test_a_request_that_is_not_http_gets_a_json_400(served):
    with connect(served) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status, headers, body = response(read_to_end(sock))
    assert status == 400 and headers["connection"] == "close"
    assert "not valid HTTP/1.1" in json.loads(body)["error"]


def test_a_wrong_method_is_405_with_a_json_error(server):
    request = urllib.request.Request(server + "/v2/models/small/infer", method="GET")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 405 and "GET is not allowed" in json.loads(caught.value.read())["error"]


# ---------------------------------------------------------------- /classify against predict


def test_classify_agrees_with_fashion_mlp_predict(server, small_run, raw_test_images, tmp_path, capsys):
    path = tmp_path / "garment.png"
    Image.fromarray(255 - raw_test_images[3]).resize((200, 200)).save(path)  # a dark garment on white
    assert main(["predict", str(small_run / "best.npz"), str(path), "--top-k", "3"]) == 0
    printed = capsys.readouterr().out.split(": ", 1)[1].strip()
    code, answer = post(server + "/classify?top_k=3", path.read_bytes())
    assert code == 200
    result = json.loads(answer)
    assert ", ".join(f"{t['class']} {t['probability']:.3f}" for t in result["top"]) == printed
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-5 and len(result["probabilities"]) == 10
    seen = Image.open(io.BytesIO(base64.b64decode(result["image"].split(",", 1)[1])))
    assert seen.size == (28, 28)
    form = b'--B\r\nContent-Disposition: form-data; name="image"; filename="g.png"\r\n'
    form += b"Content-Type: image/png\r\n\r\n"
    form += path.read_bytes() + b"\r\n--B--\r\n"
    code, multipart = post(
        server + "/classify?top_k=3", form, {"Content-Type": "multipart/form-data; boundary=B"}
    )
    assert code == 200 and json.loads(multipart)["top"] == result["top"]


# ---------------------------------------------------------------- the codecs, without a server


def test_binary_outputs_round_trip_through_the_codec():
    probabilities = np.array([[0.25, 0.75], [0.9, 0.1]], np.float32)
    request = protocol.InferRequest(
        np.zeros((2, 784), np.float32), "x", [("probabilities", True), ("class_name", True)]
    )
    body, headers = protocol.encode_infer_response(
        "m", "1", request, protocol.output_tensors(probabilities, ["a", "bb"])
    )
    n = int(headers["inference-header-content-length"])
    header = json.loads(body[:n])
    assert header["id"] == "x" and [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [
        16,
        11,
    ]
    np.testing.assert_array_equal(np.frombuffer(body[n : n + 16], "<f4").reshape(2, 2), probabilities)
    assert body[n + 16 :] == b"\x02\x00\x00\x00bb\x01\x00\x00\x00a"


class Doubler:
    """A stand-in for Inference: row sums, twice; ``gate`` holds every product until it is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        assert self.gate.wait(timeout=60)
        return x.sum(axis=1, keepdims=True) * 2


def test_the_batcher_answers_every_request_of_a_batch_that_fails_to_form(monkeypatch):
    """Regression: an exception outside the product (here np.concatenate's) left the futures it had
    taken unresolved, and their requests waited for ever."""
    from fashion_mlp.serve.app import Batcher

    def broken(*args, **kwargs):
        raise MemoryError("no room for the batch")

    async def scenario() -> list[object]:
        batcher = Batcher(Doubler(), timeout_s=600)
        monkeypatch.setattr(np, "concatenate", broken)
        rows = [np.ones((1, 3), np.float32), np.ones((2, 3), np.float32)]
        asks = [batcher.predict_proba(r) for r in rows]
        return await asyncio.wait_for(asyncio.gather(*asks, return_exceptions=True), 60)

    outcomes = asyncio.run(scenario())
    assert [type(o) for o in outcomes] == [MemoryError, MemoryError], outcomes


def test_the_batcher_combines_waiting_requests_and_keeps_its_drain_task():
    from fashion_mlp.serve.app import Batcher

    async def scenario() -> tuple[list[np.ndarray], bool]:
        model = Doubler()
        model.gate.clear()
        batcher = Batcher(model, timeout_s=600)
        first = asyncio.ensure_future(batcher.predict_proba(np.ones((1, 3), np.float32)))
        await asyncio.sleep(0)  # let it start the drain, which then waits at the gate
        held = batcher.task is not None and not batcher.task.done()
        rest = [asyncio.ensure_future(batcher.predict_proba(np.full((1, 3), k, np.float32))) for k in (2, 3)]
        model.gate.set()
        return await asyncio.wait_for(asyncio.gather(first, *rest), 60), held

    answers, held = asyncio.run(scenario())
    assert held and [float(a[0, 0]) for a in answers] == [6.0, 12.0, 18.0]


def test_a_request_the_model_does_not_answer_in_time_is_503():
    from fashion_mlp.serve.app import Batcher

    async def scenario() -> str:
        model = Doubler()
        model.gate.clear()
        batcher = Batcher(model, timeout_s=0.2)
        try:
            await batcher.predict_proba(np.ones((1, 3), np.float32))
        except protocol.ProtocolError as err:
            return f"{err.status} {err}"
        finally:
            model.gate.set()
        return "answered"

    assert asyncio.run(scenario()) == "503 the model did not answer within 0.2 s; retry shortly"


# ---------------------------------------------------------------- the page, in a real browser


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


def open_page(browser, server, width=1100):
    for context in browser.contexts:  # one page at a time: a page left open behind it keeps the focus
        context.close()
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.bring_to_front()
    errors, outside = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "request",
        lambda r: None if r.url.startswith(server) or r.url.startswith("data:") else outside.append(r.url),
    )
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('test accuracy')")
    return page, errors, outside


def test_the_page_classifies_an_uploaded_test_image(browser, server, raw_test_images, tmp_path):
    path = tmp_path / "shoe.png"
    Image.fromarray(raw_test_images[0]).resize((140, 140)).save(path)  # test image 0: an ankle boot
    page, errors, outside = open_page(browser, server)
    assert MODEL in page.text_content("#model")
    page.set_input_files("#file", str(path))
    page.wait_for_function("document.querySelectorAll('#bars .bar').length === 10")
    top = page.text_content("#top")
    assert top.split(" (")[0] in data.CLASS_NAMES and page.get_attribute("#seen", "src").startswith(
        "data:image/png"
    )
    page.screenshot(path=str(tmp_path / "page.png"))
    assert not errors and not outside, (errors, outside)


def test_the_page_classifies_a_drawing_and_works_by_keyboard_on_a_narrow_screen(browser, server):
    page, errors, outside = open_page(browser, server, width=380)
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 30)
    page.mouse.down()
    for x, y in ((40, 250), (140, 250), (140, 30), (240, 30), (240, 250)):  # a stroke like trousers
        page.mouse.move(box["x"] + x * box["width"] / 280, box["y"] + y * box["height"] / 280, steps=5)
    page.mouse.up()
    page.focus("#classify-drawing")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelectorAll('#bars .bar').length === 10")
    assert page.text_content("#top").split(" (")[0] in data.CLASS_NAMES
    assert page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth + 1"
    )  # no sideways scroll
    assert not errors and not outside, (errors, outside)


def test_the_page_chooses_a_photo_from_the_keyboard(browser, server, raw_test_images, tmp_path):
    """Enter on the drop zone opens the file picker (a click on the file input), which a person then
    fills. The click is caught in the page, not through Chromium's file-chooser interception, which
    switches on asynchronously and raced."""
    path = tmp_path / "trousers.png"
    Image.fromarray(raw_test_images[2]).save(path)
    page, errors, outside = open_page(browser, server)
    page.evaluate(
        "window.pickerOpened = 0; document.getElementById('file').addEventListener("
        "'click', (e) => { window.pickerOpened++; e.preventDefault(); })"
    )
    page.focus("#drop")
    page.keyboard.press("Enter")
    page.wait_for_function("window.pickerOpened === 1")
    page.set_input_files("#file", str(path))
    page.wait_for_function("document.querySelectorAll('#bars .bar').length === 10")
    assert page.evaluate("window.pickerOpened") == 1
    assert not errors and not outside, (errors, outside)


def test_the_page_shows_a_server_error_as_a_message(browser, server, tmp_path):
    path = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(path)
    page, _, _ = open_page(browser, server)  # the console does log the refused request here
    page.set_input_files("#file", str(path))
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert "blank" in page.text_content("#error") and page.text_content("#top") == "No answer."
