"""`fashion-mlp serve`: a real server process on 127.0.0.1, talked to by the official tritonclient, by
plain HTTP with bad requests, and by a real Chromium driven by Playwright."""

import base64
import io
import json
import signal
import socket
import subprocess
import sys
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def raw_test_images() -> np.ndarray:
    return read_idx(data.locate(allow_download=False).paths["test-images"])[:300]


@pytest.fixture(scope="module")
def server(small_run):
    """A server process on a free port of 127.0.0.1, serving the small run's best checkpoint."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fashion_mlp",
            "serve",
            f"{MODEL}={small_run / 'best.npz'}",
            "--port",
            str(port),
            "--max-body-bytes",
            "2000000",
            "--max-rows",
            "500",
            "--max-image-pixels",
            "4000000",
            "--max-concurrency",
            "8",
            "--read-timeout",
            "1.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/v2/health/ready", timeout=1)
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"the server exited: {process.stdout.read()}")
            time.sleep(0.1)
    yield url
    process.terminate()  # SIGTERM: it finishes what is in flight, then exits by that signal, as uvicorn does
    output = process.communicate(timeout=30)[0]
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Finished server process" in output and "Traceback" not in output, output


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


def test_a_body_over_the_limit_is_413(server):
    code, answer = post(server + "/v2/models/small/infer", b" " * 2_000_001)
    assert code == 413 and "limit" in json.loads(answer)["error"]


def slow_request(server: str, path: str = "/v2/models/small/infer") -> socket.socket:
    """A request whose body never finishes arriving."""
    host, port = server.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{".encode())
    return sock


def test_a_body_slower_than_the_read_timeout_is_408(server):
    sock = slow_request(server)
    answer = sock.recv(65536).decode()  # arrives after --read-timeout 1.5 s
    sock.close()
    assert answer.startswith("HTTP/1.1 408") and "took longer than 1.5 s" in answer


def test_past_the_concurrency_cap_a_request_is_503_at_once_and_then_served_again(server):
    held = [slow_request(server) for _ in range(8)]  # --max-concurrency 8, all of them in flight
    time.sleep(0.3)
    started = time.perf_counter()
    code, answer = post(server + "/v2/models/small/infer", infer_body())
    assert code == 503 and "busy" in json.loads(answer)["error"] and time.perf_counter() - started < 1
    for sock in held:
        sock.recv(65536)  # each one's 408
        sock.close()
    assert post(server + "/v2/models/small/infer", infer_body())[0] == 200


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
    path = tmp_path / "trousers.png"
    Image.fromarray(raw_test_images[2]).save(path)
    page, errors, outside = open_page(browser, server)
    chosen = []
    page.on("filechooser", lambda chooser: (chosen.append(chooser), chooser.set_files(str(path))))
    page.wait_for_timeout(300)  # the handler turns on Chromium's file-chooser interception, asynchronously
    page.focus("#drop")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelectorAll('#bars .bar').length === 10")
    assert len(chosen) == 1
    assert not errors and not outside, (errors, outside)


def test_the_page_shows_a_server_error_as_a_message(browser, server, tmp_path):
    path = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(path)
    page, _, _ = open_page(browser, server)  # the console does log the refused request here
    page.set_input_files("#file", str(path))
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert "blank" in page.text_content("#error") and page.text_content("#top") == "No answer."
