"""`fashion-mlp serve` as an operator runs it: a real Prometheus scraping /metrics, SIGTERM with
requests in flight, $PORT, and a folder of checkpoints. Real processes, on 127.0.0.1 only."""

import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra: pip install -e '.[serve]'")
prometheus_parser = pytest.importorskip("prometheus_client.parser", reason="the serve extra")

from fashion_mlp import checkpoint, data  # noqa: E402
from fashion_mlp.cli import main  # noqa: E402
from fashion_mlp.nn import MLP  # noqa: E402
from tests.test_serve import MODEL, Server, infer_body, post, wait_for  # noqa: E402

INFER = f"/v2/models/{MODEL}/infer"


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Our /metrics, parsed by prometheus_client's own parser: (sample name, labels) -> value."""
    with urllib.request.urlopen(url + "/metrics", timeout=60) as answer:
        assert answer.headers["content-type"].startswith("text/plain; version=")
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in prometheus_parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


def test_metrics_count_by_route_status_and_model_and_bound_their_labels(small_run):
    server = Server(small_run / "best.npz")
    try:
        for _ in range(3):
            assert post(server.url + INFER, infer_body())[0] == 200
        assert post(server.url + INFER, b"{not json")[0] == 400
        for i in range(20):  # unknown models and paths: counted, without a label set each
            assert post(server.url + f"/v2/models/m{i}/infer", infer_body())[0] == 404
            assert post(server.url + f"/nothing/{i}", b"")[0] == 404
        samples = scrape(server.url)
    finally:
        server.stop()
    infer = {"path": "/v2/models/{name}/infer", "model_name": MODEL}
    assert value(samples, "rest_server_requests_total", status_code="200", **infer) == 3
    assert value(samples, "rest_server_requests_total", status_code="400", **infer) == 1
    assert value(samples, "rest_server_requests_duration_seconds_count", **infer) == 4
    assert value(samples, "model_infer_request_success_total", model_name=MODEL, model_version="1") == 3
    assert value(samples, "model_infer_request_failure_total", model_name=MODEL) == 1
    assert value(samples, "batch_rows_sum", model_name=MODEL) == 3  # three products of one row
    assert value(samples, "rest_server_requests_total", model_name="", status_code="404") == 40
    assert value(samples, "rest_server_requests_total", path="(unmatched)") == 20
    assert not [ls for (n, ls) in samples if ("model_name", "m7") in ls or ("path", "/nothing/7") in ls]
    assert value(samples, "rest_server_requests_in_progress") == 1  # the scrape itself
    (info,) = [dict(ls) for (n, ls) in samples if n == "model_info"]
    assert info["architecture"] == "784-64-32-10" and info["model_name"] == MODEL
    assert 0 < float(info["test_accuracy"]) <= 1
    assert value(samples, "process_resident_memory_bytes") > 10 << 20


def test_without_metrics_there_is_no_metrics_route_and_without_the_access_log_no_line(small_run):
    server = Server(small_run / "best.npz", "--no-metrics", "--no-access-log")
    try:
        assert post(server.url + INFER, infer_body())[0] == 200
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(server.url + "/metrics", timeout=30)
        assert caught.value.code == 404 and "no route /metrics" in json.loads(caught.value.read())["error"]
    finally:
        server.stop()
    assert not [line for line in server.lines if "POST /v2/models" in line], server.lines
    server = Server(small_run / "best.npz")  # the access log is on unless told
    try:
        assert post(server.url + INFER, infer_body())[0] == 200
        wait_for(lambda: [line for line in server.lines if "POST /v2/models/small/infer" in line], "its line")
    finally:
        server.stop()


# ---------------------------------------------------------------- a real Prometheus


class Prometheus:
    """Debian's prometheus, scraping ``target`` (host:port) every second, on a port of its own
    choosing: it logs 'Listening on' with the address it got."""

    def __init__(self, target: str, folder: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("prometheus is not installed (make test installs Debian's package)")
        config = folder / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: fashion-mlp\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = folder / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={folder / 'tsdb'}",
                    "--web.listen-address=127.0.0.1:0",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def listening() -> str | None:
            assert self.process.poll() is None, self.log.read_text()
            found = re.search(r'msg="Listening on" address=(127\.0\.0\.1:\d+)', self.log.read_text())
            return found and f"http://{found.group(1)}"

        try:
            self.url = wait_for(listening, "prometheus to listen")
            wait_for(self.ready, "prometheus to be ready", 120)  # it listens first, answering 503 until then
        except BaseException:
            self.stop()  # no prometheus left running after a failed start
            raise

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=30) as answer:
                return answer.status == 200
        except urllib.error.HTTPError as err:
            assert err.code == 503, err  # "Service Unavailable" while its storage opens
            return False

    def query(self, promql: str) -> float | None:
        """An instant query's single value, or None while it has none."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=30) as answer:
            result = json.loads(answer.read())["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def test_a_real_prometheus_scrapes_the_request_count_and_latency_histogram(small_run, tmp_path):
    server = Server(small_run / "best.npz")
    prometheus = None
    try:
        prometheus = Prometheus(f"127.0.0.1:{server.address[1]}", tmp_path)
        wait_for(lambda: prometheus.query('up{job="fashion-mlp"}') == 1, "the first scrape", 120)
        for _ in range(37):
            assert post(server.url + INFER, infer_body())[0] == 200
        for _ in range(4):
            assert post(server.url + INFER, b"{not json")[0] == 400
        expected = {
            'sum(rest_server_requests_total{path="/v2/models/{name}/infer",status_code="200"})': 37,
            'sum(rest_server_requests_total{path="/v2/models/{name}/infer",status_code="400"})': 4,
            'sum(rest_server_requests_duration_seconds_count{path="/v2/models/{name}/infer"})': 41,
            'sum(rest_server_requests_duration_seconds_bucket{path="/v2/models/{name}/infer",le="+Inf"})': 41,
            f'model_infer_request_success_total{{model_name="{MODEL}"}}': 37,
            f'model_infer_request_failure_total{{model_name="{MODEL}"}}': 4,
            f'count(model_info{{model_name="{MODEL}",architecture="784-64-32-10"}})': 1,
        }

        def all_scraped() -> bool:
            return all(prometheus.query(q) == n for q, n in expected.items())

        wait_for(all_scraped, "Prometheus to hold every count", 120)
    finally:
        if prometheus is not None:
            prometheus.stop()
        server.stop()


# ---------------------------------------------------------------- SIGTERM


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory) -> Path:
    """784-4096-4096-10 with random weights: a product of 4,096 rows takes about a second."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("wide") / "wide.npz"
    model = MLP([784, 4096, 4096, 10], rng)
    checkpoint.save(path, model, {"normalisation": data.NORMALISATION, "class_names": list(data.CLASS_NAMES)})
    return path


def uint8_body(rows: int) -> tuple[bytes, dict[str, str]]:
    """An inference request of ``rows`` images in binary UINT8."""
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "datatype": "UINT8",
                    "shape": [rows, 784],
                    "parameters": {"binary_data_size": rows * 784},
                }
            ]
        }
    ).encode()
    pixels = np.random.default_rng(rows).integers(0, 256, (rows, 784), dtype=np.uint8)
    return head + pixels.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


class Client(threading.Thread):
    """One request in a thread of its own: its status, its rows of answer, and when it ended."""

    def __init__(self, url: str, rows: int) -> None:
        super().__init__(daemon=True)
        self.url, self.rows = url, rows
        self.status: int | str | None = None
        self.answered_rows = 0
        self.ended = 0.0

    def run(self) -> None:
        body, headers = uint8_body(self.rows)
        request = urllib.request.Request(self.url + INFER, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=600) as answer:
                self.status = answer.status
                outputs = json.loads(answer.read())["outputs"]
                self.answered_rows = outputs[0]["shape"][0]
        except urllib.error.HTTPError as err:
            self.status = err.code
        except OSError as err:  # the connection ended without an answer
            self.status = type(err).__name__
        self.ended = time.monotonic()


def refused(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=10).close()
    except ConnectionRefusedError:
        return True
    return False


def start_behind_blockers(server: Server, n: int) -> tuple[list[Client], list[Client]]:
    """Two requests of 4,096 rows occupy the model; then ``n`` small ones, which queue behind them.
    Returns once the server holds all ``n`` in flight (its own in-progress gauge says so)."""
    blockers = [Client(server.url, 4096) for _ in range(2)]
    for blocker in blockers:
        blocker.start()
    wait_for(lambda: value(scrape(server.url), "batch_rows_count") >= 1, "the first blocker to start")
    clients = [Client(server.url, 64) for _ in range(n)]
    for client in clients:
        client.start()

    def all_in_flight() -> bool:  # the gauge counts the scrape and the blockers still running too
        pending_blockers = sum(b.status is None for b in blockers)
        return value(scrape(server.url), "rest_server_requests_in_progress") - 1 - pending_blockers >= n

    wait_for(all_in_flight, f"{n} requests in flight", 120)
    return blockers, clients


def test_sigterm_refuses_new_connections_and_lets_64_requests_in_flight_finish(wide_checkpoint):
    server = Server(wide_checkpoint, "--grace-seconds", "300")
    blockers, clients = start_behind_blockers(server, 64)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: refused(server.address), "the listening socket to close")
    refused_at = time.monotonic()
    for client in blockers + clients:
        client.join(timeout=600)
    assert [c.status for c in blockers + clients] == [200] * 66
    assert [c.answered_rows for c in clients] == [64] * 64
    assert sum(c.ended > signalled for c in clients) >= 32  # most were still waiting for the model
    assert refused_at < max(c.ended for c in clients)  # refused while requests were still in flight
    server.process.wait(timeout=300)
    assert time.monotonic() - signalled < 300  # within --grace-seconds
    server.reader.join(timeout=60)
    output = "".join(server.lines)
    assert server.process.returncode in (0, -signal.SIGTERM), output
    assert "Finished server process" in output and "Traceback" not in output, output


def test_past_the_grace_period_the_server_exits_without_waiting_for_the_rest(wide_checkpoint):
    server = Server(wide_checkpoint, "--grace-seconds", "0.5")
    blockers, clients = start_behind_blockers(server, 8)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=120)
    # the product running at the signal finishes (a thread cannot be stopped), then the process ends
    assert time.monotonic() - signalled < 60
    for client in blockers + clients:
        client.join(timeout=120)
        assert not client.is_alive()
    assert sum(c.status != 200 for c in clients) >= 1  # cut off, not waited for
    server.reader.join(timeout=60)
    assert "timeout graceful shutdown exceeded" in "".join(server.lines)


# ---------------------------------------------------------------- $PORT and folders


def test_port_comes_from_the_environment_and_the_flag_wins(small_run):
    server = Server(small_run / "best.npz", env={"PORT": "0"})  # no --port: $PORT's 0 picks a free one
    try:
        assert post(server.url + INFER, infer_body())[0] == 200
    finally:
        server.stop()
    server = Server(small_run / "best.npz", "--port", "0", env={"PORT": "not a port"})  # never read
    try:
        assert post(server.url + INFER, infer_body())[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize("port", ["abc", "70000", "-1"])
def test_a_port_in_the_environment_that_is_not_one_is_a_usage_error(small_run, capsys, monkeypatch, port):
    monkeypatch.setenv("PORT", port)
    assert main(["serve", str(small_run / "best.npz")]) == 2
    err = capsys.readouterr().err
    assert f"PORT={port!r} in the environment is not a port" in err and "Traceback" not in err


def test_serve_a_folder_serves_each_checkpoint_under_its_name(small_run, tmp_path):
    folder = tmp_path / "models"  # as KServe mounts a storageUri: NAME.npz, and runs/NAME/best.npz
    (folder / "cnn").mkdir(parents=True)
    shutil.copy(small_run / "best.npz", folder / "mlp.npz")
    shutil.copy(Path(__file__).parent / "data" / "cnn-2026-12-04.npz", folder / "cnn" / "best.npz")
    (folder / "notes.txt").write_text("not a checkpoint")
    server = Server(str(folder))
    try:
        with urllib.request.urlopen(server.url + "/info", timeout=30) as answer:
            models = {m["name"]: m["architecture"] for m in json.loads(answer.read())["models"]}
        assert models == {"mlp": "784-64-32-10", "cnn": "conv3x3(8)-pool-conv3x3(16)-pool-fc32-fc10"}
        for name in models:
            status, body = post(server.url + f"/v2/models/{name}/infer", infer_body(rows=2))
            assert status == 200 and json.loads(body)["model_name"] == name
    finally:
        server.stop()


@pytest.mark.parametrize(
    "spec, message",
    [("{empty}", "no checkpoints in this folder"), ("x={empty}", "NAME= names one checkpoint")],
)
def test_a_folder_without_checkpoints_or_with_a_name_is_a_usage_error(tmp_path, capsys, spec, message):
    (tmp_path / "empty").mkdir()
    assert main(["serve", spec.format(empty=tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
