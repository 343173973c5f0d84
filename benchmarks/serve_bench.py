"""`make bench-serve`: our server against MLServer 1.7, the reference Python server of the protocol.

Two checkpoints, each in a table of its own: the MLP (the newest runs/*/last.npz, or a 784-1024-1024-10
with random weights) and the cnn preset's network (the newest convolutional runs/*/last.npz, or the
preset's network with random weights: speed depends on shapes). Both servers serve the same checkpoint:
ours through `fashion-mlp serve`, MLServer through the small custom runtime in
benchmarks/mlserver_runtime.py, which calls our own nn.Inference, so that only the server differs.
MLServer runs from its own virtual environment (.venv-mlserver), at its defaults and with adaptive
batching on ("parallel_workers": 0 in both: MLServer 1.7.1's worker processes crash at start with the
uvloop pip installs today). The load is `hey`, in its own process, against 127.0.0.1, with the same
request bodies for every server, at concurrency 1 and 32: batch-1 JSON for both servers (MLServer
1.7.1 answers the binary tensor extension with a 500), and for ours on the MLP also batch-1 and
batch-64 binary and /classify with a 400x400 JPEG.

Every server of a table runs at once, and they are measured in turns: each round runs every workload at
each concurrency on each server, one after the other, the order rotating each round; a cell is the median
of its rounds (--rounds, 3).

Then the metrics' cost: ours with and without --no-metrics, and a second server with metrics as the
control, batch-1 JSON at concurrency 1 and 32, in turns, all three started afresh each round (5 x
rounds), medians; with the CPU time each server used a request, which the load generator sharing the
cores disturbs far less than the throughput.

Then a soak of ours: 100,000 requests at concurrency 32 with one in ten malformed (two `hey` processes
at once, 29 connections sending good requests and 3 sending truncated JSON), counting statuses, and its
resident memory after warm-up and after the soak.
Writes benchmarks/serve.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from fashion_mlp import checkpoint, data
from fashion_mlp.config import PRESETS
from fashion_mlp.idx import read_idx
from fashion_mlp.nn import MLP
from fashion_mlp.train import build_model

sys.path.insert(0, str(Path(__file__).parent))
import kernel

ROOT = Path(__file__).parent.parent
MLSERVER_VENV = ROOT / ".venv-mlserver"
MODEL = "fashion"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def the_checkpoint(given: Path | None, scratch: Path, convolutional: bool) -> Path:
    """The newest run's last.npz of the kind asked for, or that kind's network with random weights
    (speed depends on shapes): 784-1024-1024-10, or the cnn preset's."""
    if given:
        return given
    runs = sorted(ROOT.glob("runs/*/last.npz"), key=lambda p: p.stat().st_mtime)
    for run in reversed(runs):
        if checkpoint.load(run).model.describe().startswith("conv") == convolutional:
            return run
    rng = np.random.default_rng(0)
    mean = rng.uniform(-1, 0, 784).astype(np.float32)
    if convolutional:
        model = build_model(PRESETS["cnn"], rng, mean)
        path = scratch / "random-cnn.npz"
    else:
        model = MLP([784, 1024, 1024, 10], rng, input_mean=mean)
        path = scratch / "random-mlp.npz"
    checkpoint.save(path, model, {"normalisation": data.NORMALISATION, "class_names": list(data.CLASS_NAMES)})
    return path


def bodies(scratch: Path) -> dict[str, tuple[Path, dict[str, str]]]:
    """Each workload's request body on disk, with the headers it needs."""
    images = read_idx(data.locate(allow_download=False).paths["test-images"])[:64].reshape(64, 784)
    out = {}
    one = {
        "inputs": [
            {
                "name": "pixels",
                "datatype": "FP32",
                "shape": [1, 784],
                "data": images[0].astype(float).tolist(),
            }
        ]
    }
    (scratch / "json1").write_bytes(json.dumps(one).encode())
    out["batch-1 JSON"] = (scratch / "json1", {"Content-Type": "application/json"})
    for rows in (1, 64):
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "pixels",
                        "datatype": "FP32",
                        "shape": [rows, 784],
                        "parameters": {"binary_data_size": rows * 784 * 4},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        ).encode()
        (scratch / f"bin{rows}").write_bytes(header + images[:rows].astype(np.float32).tobytes())
        out[f"batch-{rows} binary"] = (
            scratch / f"bin{rows}",
            {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
        )
    photo = Image.fromarray(255 - images[0].reshape(28, 28)).resize((400, 400)).convert("RGB")
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    (scratch / "photo.jpg").write_bytes(buffer.getvalue())
    out["/classify 400x400 JPEG"] = (scratch / "photo.jpg", {"Content-Type": "image/jpeg"})
    return out


def wait_ready(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {process.stdout.read() if process.stdout else ''}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready in {seconds} s")


def start_ours(ckpt: Path, port: int, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fashion_mlp",
            "serve",
            f"{MODEL}={ckpt}",
            "--port",
            str(port),
            "--max-body-bytes",
            str(64 << 20),
            "--no-access-log",  # as MLServer at its defaults ("debug": false): no line a request
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_mlserver(ckpt: Path, port: int, scratch: Path, batching: bool) -> subprocess.Popen:
    folder = scratch / ("mlserver-batching" if batching else "mlserver")
    (folder / MODEL).mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).parent / "mlserver_runtime.py", folder / "mlserver_runtime.py")
    settings = {
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 0,
        "host": "127.0.0.1",
        "debug": False,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": MODEL,
        "implementation": "mlserver_runtime.FashionRuntime",
        "parameters": {"uri": str(ckpt)},
    }
    if batching:
        model.update(max_batch_size=32, max_batch_time=0.002)
    (folder / MODEL / "model-settings.json").write_text(json.dumps(model))
    return subprocess.Popen(
        [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(folder)],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(folder)},
    )


def hey(url: str, body: Path, headers: dict[str, str], concurrency: int, requests: int) -> dict:
    argv = ["hey", "-n", str(requests), "-c", str(concurrency), "-m", "POST", "-D", str(body), "-t", "30"]
    for key, value in headers.items():
        argv += ["-H", f"{key}: {value}"] if key != "Content-Type" else ["-T", value]
    text = subprocess.run([*argv, url], capture_output=True, text=True, check=True, timeout=600).stdout
    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p50_ms": 1000 * float(re.search(r"50%+ in ([\d.]+) secs", text).group(1)),
        "p99_ms": 1000 * float(re.search(r"99%+ in ([\d.]+) secs", text).group(1)),
        "statuses": statuses,
    }


def cpu_seconds(process: subprocess.Popen) -> float:
    """The CPU time a server has used so far, all its threads, user and system (Linux's /proc)."""
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def measure_in_turns(servers: dict[str, tuple], requests: dict, rounds: int) -> dict[str, dict]:
    """Every server started at once, then measured in turns: each round runs each workload at each
    concurrency on every server, one after the other, the servers' order rotating each round. Each
    cell is the median of its rounds; the others wait idle meanwhile. ``servers`` maps a name to
    (process, base URL, workloads)."""
    samples: dict[str, dict[str, list[dict]]] = {name: {} for name in servers}
    try:
        for process, base, workloads in servers.values():
            wait_ready(base + "/v2/health/ready", process)
            for workload, (body, headers) in workloads.items():
                hey(_url(base, workload), body, headers, 8, 200)  # warm-up
        keys = list(dict.fromkeys(w for _, _, workloads in servers.values() for w in workloads))
        names = list(servers)
        for round_ in range(rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for workload in keys:
                for concurrency in (1, 32):
                    for name in order:
                        process, base, workloads = servers[name]
                        if workload not in workloads:
                            continue
                        body, headers = workloads[workload]
                        cpu = cpu_seconds(process)
                        row = hey(_url(base, workload), body, headers, concurrency, requests[concurrency])
                        answered = sum(row["statuses"].values())
                        row["server_cpu_us"] = 1e6 * (cpu_seconds(process) - cpu) / max(answered, 1)
                        samples[name].setdefault(f"{workload}, c{concurrency}", []).append(row)
                        print(
                            f"round {round_ + 1}: {name}: {workload} c{concurrency}: "
                            f"{row['requests_per_s']:.0f} req/s",
                            file=sys.stderr,
                        )
    finally:
        for process, _, _ in servers.values():
            stop(process)
    return {name: {key: _median_row(rows) for key, rows in cells.items()} for name, cells in samples.items()}


def _url(base: str, workload: str) -> str:
    return base + ("/classify" if workload.startswith("/classify") else f"/v2/models/{MODEL}/infer")


def _median_row(rows: list[dict]) -> dict:
    statuses: dict[int, int] = {}
    for row in rows:
        for code, n in row["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    return {
        "requests_per_s": float(np.median([r["requests_per_s"] for r in rows])),
        "p50_ms": float(np.median([r["p50_ms"] for r in rows])),
        "p99_ms": float(np.median([r["p99_ms"] for r in rows])),
        "server_cpu_us": float(np.median([r["server_cpu_us"] for r in rows])),
        "statuses": statuses,
        "rounds": [r["requests_per_s"] for r in rows],
    }


def metrics_overhead(ckpt: Path, workloads: dict, requests: dict, rounds: int) -> dict:
    """Ours with metrics ("on"), with --no-metrics ("off"), and a second server with metrics ("on, again"),
    batch-1 JSON, in turns. Each round starts all three afresh, so that no server keeps the same cores,
    memory or luck for every round; a cell is the median of the rounds, and ``paired`` the median of
    the rounds' own ratios. The overhead is on against off; the control, on against on again, is what
    two identical servers differ by: a difference under it is not resolved."""
    json1 = {"batch-1 JSON": workloads["batch-1 JSON"]}
    sides = {"on": (), "off": ("--no-metrics",), "on, again": ()}
    labels = {"on": "on", "off": "off", "on, again": "on_again"}  # the results' keys
    samples: dict[str, dict[str, list[dict]]] = {side: {} for side in sides}
    for round_ in range(rounds):
        names = list(sides)
        turn = round_ % len(names)
        names = names[turn:] + names[:turn]  # who starts first, and goes first, rotates
        servers = {}
        for side in names:
            port = free_port()
            servers[side] = (start_ours(ckpt, port, *sides[side]), f"http://127.0.0.1:{port}", json1)
        rows = measure_in_turns(servers, requests, 1)
        for side, cells in rows.items():
            for key, row in cells.items():
                samples[side].setdefault(key, []).append(row)
    out = {}
    for key in samples["on"]:
        cells = {side: _median_row(samples[side][key]) for side in sides}
        rps = {side: [r["requests_per_s"] for r in samples[side][key]] for side in sides}
        on, off, again = (cells[side]["requests_per_s"] for side in sides)
        out[key] = {
            **{labels[side]: cells[side]["requests_per_s"] for side in sides},
            "overhead": 1 - on / off,
            "overhead_paired": 1 - float(np.median(np.divide(rps["on"], rps["off"]))),
            "control": 1 - on / again,
            "control_paired": 1 - float(np.median(np.divide(rps["on"], rps["on, again"]))),
            **{
                field: {labels[side]: cells[side][field] for side in sides}
                for field in ("p99_ms", "server_cpu_us")
            },
            "rounds": rps,
        }
    return out


def middleware_cost_us(n: int = 20_000, rounds: int = 7) -> float:
    """What the metrics' middleware adds to a request, in microseconds, in this process: an answered
    request through ``Instrument`` against the same app alone (the median of rounds, in turns)."""
    import asyncio

    from fashion_mlp.serve.metrics import Instrument, Metrics

    async def endpoint() -> None: ...

    async def app(scope: dict, receive, send) -> None:
        scope.update(endpoint=endpoint, path_params={"name": MODEL})  # as the router sets them
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        pass

    metrics = Metrics("1")
    metrics.add_model(MODEL, "784-10", None)
    instrumented = Instrument(
        app, metrics, {(endpoint, False): "/v2/models/{name}/infer"}, [endpoint], [MODEL], MODEL
    )

    async def per_request(target) -> float:
        scope = {"type": "http", "method": "POST", "path": f"/v2/models/{MODEL}/infer", "query_string": b""}
        started = time.perf_counter()
        for _ in range(n):
            await target(dict(scope), receive, send)
        return (time.perf_counter() - started) / n * 1e6

    async def measure() -> float:
        costs = [await per_request(instrumented) - await per_request(app) for _ in range(rounds)]
        return float(np.median(costs))

    return asyncio.run(measure())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _hey_process(url: str, body: Path, requests: int, concurrency: int) -> subprocess.Popen:
    argv = ["hey", "-n", str(requests), "-c", str(concurrency), "-m", "POST", "-T", "application/json"]
    return subprocess.Popen([*argv, "-D", str(body), url], stdout=subprocess.PIPE, text=True)


def soak(ckpt: Path, scratch: Path, total: int) -> dict:
    port = free_port()
    process = start_ours(ckpt, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base + "/v2/health/ready", process)
        hey(
            f"{base}/v2/models/{MODEL}/infer",
            scratch / "json1",
            {"Content-Type": "application/json"},
            32,
            5000,
        )
        warm = rss_mb(process.pid)
        (scratch / "malformed").write_bytes(
            b'{"inputs": [{"name": "pixels", "shape": [1, 784], "data": [0, 1'
        )
        url = f"{base}/v2/models/{MODEL}/infer"
        started = time.perf_counter()
        # Two hey processes at once: 29 connections of good requests and 3 of malformed, one in ten.
        good = _hey_process(url, scratch / "json1", total * 9 // 10, 29)
        bad = _hey_process(url, scratch / "malformed", total // 10, 3)
        texts = [good.communicate(timeout=1800)[0], bad.communicate(timeout=1800)[0]]
        seconds = time.perf_counter() - started
        after = rss_mb(process.pid)
        alive = urllib.request.urlopen(base + "/v2/health/live", timeout=5).status == 200
    finally:
        stop(process)
    statuses: dict[int, int] = {}
    for text in texts:
        for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text):
            statuses[int(code)] = statuses.get(int(code), 0) + int(n)
    good_latency = {
        q: 1000 * float(re.search(rf"{q}%+ in ([\d.]+) secs", texts[0]).group(1)) for q in (50, 99)
    }
    return {
        "requests": sum(statuses.values()),
        "statuses": statuses,
        "seconds": seconds,
        "server_5xx": sum(n for s, n in statuses.items() if s >= 500),
        "alive_after": alive,
        "rss_after_warmup_mb": warm,
        "rss_after_soak_mb": after,
        "rss_growth": after / warm - 1,
        "p50_ms": good_latency[50],
        "p99_ms": good_latency[99],
    }


def format_table(results: dict) -> str:
    lines = [kernel.line(results["kernel"]), ""] if "kernel" in results else []
    for model in results["models"].values():
        lines += [
            f"{results['date']}; {results['cpus']} CPUs; {model['checkpoint']} ({model['architecture']}); "
            "hey, requests/s (p50 / p99 ms)",
            "",
            *server_rows(model["servers"]),
            "",
        ]
    overhead = results.get("metrics_overhead")
    if overhead:
        when = results.get("dates", {}).get("metrics", results["date"])
        lines.append(
            f"{when}: metrics on against --no-metrics, and against a second server with metrics (the "
            "control: what two identical servers differ by), batch-1 JSON, in turns, the servers started "
            "afresh each round; medians of rounds, then the median of each round's own ratio:"
        )
        for key, row in overhead.items():
            cpu = row["server_cpu_us"]
            lines.append(
                f"- {key}: on {row['on']:,.0f}, off {row['off']:,.0f}, on again {row['on_again']:,.0f} "
                f"requests/s; overhead {row['overhead']:+.1%} (paired {row['overhead_paired']:+.1%}), "
                f"control {row['control']:+.1%} (paired {row['control_paired']:+.1%}); p99 "
                f"{row['p99_ms']['on']:.1f}, {row['p99_ms']['off']:.1f} and "
                f"{row['p99_ms']['on_again']:.1f} ms; the server's CPU time a request "
                f"{cpu['on']:.0f}, {cpu['off']:.0f} and {cpu['on_again']:.0f} us"
            )
        cost = results["metrics_middleware_us"]
        lines.append(f"- the middleware's own cost, measured in one process: {cost:.1f} us a request")
    s = results.get("soak")
    if s:
        lines += [
            "",
            f"Soak: {s['requests']:,} requests at concurrency 32, one in ten malformed, "
            f"in {s['seconds']:.0f} s: statuses {s['statuses']}, {s['server_5xx']} 5xx, "
            f"still live: {s['alive_after']}; resident memory {s['rss_after_warmup_mb']:.0f} MB after "
            f"warm-up, {s['rss_after_soak_mb']:.0f} MB after ({s['rss_growth']:+.1%}); "
            f"p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms.",
        ]
    return "\n".join(lines)


def server_rows(results: dict) -> list[str]:
    servers = list(results)
    lines = ["| workload | " + " | ".join(servers) + " | ours / best MLServer |"]
    lines.append("|---|" + "---|" * (len(servers) + 1))
    for key in results["ours"]:
        cells, best = [], 0.0
        for server in servers:
            row = results[server].get(key)
            if row is None or row["statuses"].get(200, 0) == 0:
                cells.append("—" if row is None else "refused")
                continue
            cells.append(f"{row['requests_per_s']:,.0f} ({row['p50_ms']:.1f} / {row['p99_ms']:.1f})")
            if server != "ours":
                best = max(best, row["requests_per_s"])
        ours = results["ours"][key]["requests_per_s"]
        ratio = f"{ours / best:.2f}x" if best else "—"
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {ratio} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, help="the MLP; default: the newest MLP runs/*/last.npz")
    parser.add_argument(
        "--cnn-checkpoint", type=Path, help="default: the newest convolutional runs/*/last.npz"
    )
    parser.add_argument(
        "--requests", type=int, default=4000, help="requests per measurement at c32 (c1: a quarter)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of turns; each cell is their median")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["tables", "metrics", "soak"],
        default=["tables", "metrics", "soak"],
        help="what to run (default: all three)",
    )
    parser.add_argument("--soak", type=int, default=100_000, help="requests of the soak (0: none)")
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "serve.json")
    args = parser.parse_args()
    kernel.use_the_users_kernel()
    scratch = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    checkpoints = {
        "mlp": the_checkpoint(args.checkpoint, scratch, convolutional=False),
        "cnn": the_checkpoint(args.cnn_checkpoint, scratch, convolutional=True),
    }
    workloads = bodies(scratch)
    requests = {1: max(200, args.requests // 4), 32: args.requests}
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "kernel": kernel.describe(),
        "models": {},
    }
    if not args.skip_mlserver and not (MLSERVER_VENV / "bin" / "mlserver").exists():
        raise SystemExit(f"MLServer is not installed in {MLSERVER_VENV}: make bench-serve installs it")
    for kind, ckpt in checkpoints.items() if "tables" in args.parts else ():
        ours_workloads = workloads if kind == "mlp" else {k: v for k, v in workloads.items() if "JSON" in k}
        port = free_port()
        servers = {"ours": (start_ours(ckpt, port), f"http://127.0.0.1:{port}", ours_workloads)}
        if not args.skip_mlserver:
            # MLServer 1.7.1 answers binary tensor data with a 500: JSON only; /classify is ours alone
            protocol_only = {k: v for k, v in ours_workloads.items() if "JSON" in k}
            for batching in (False, True):
                port = free_port()
                name = "MLServer, adaptive batching" if batching else "MLServer"
                process = start_mlserver(ckpt, port, scratch, batching)
                servers[name] = (process, f"http://127.0.0.1:{port}", protocol_only)
        results["models"][kind] = {
            "checkpoint": str(ckpt),
            "architecture": checkpoint.load(ckpt).model.describe(),
            "servers": measure_in_turns(servers, requests, args.rounds),
        }
    if "metrics" in args.parts:
        results["metrics_overhead"] = metrics_overhead(
            checkpoints["mlp"], workloads, requests, 5 * args.rounds
        )
        results["metrics_middleware_us"] = middleware_cost_us()
    if args.soak and "soak" in args.parts:
        results["soak"] = soak(checkpoints["mlp"], scratch, args.soak)
    if set(args.parts) != {"tables", "metrics", "soak"} and args.out.exists():
        # a partial run updates its parts, keeping the others' figures and the date they were measured
        earlier = json.loads(args.out.read_text())
        dates = {
            **{part: earlier["date"] for part in ("tables", "metrics", "soak")},
            **earlier.get("dates", {}),
            **{part: results["date"] for part in args.parts},
        }
        results = {**earlier, **{k: v for k, v in results.items() if k != "date"}, "dates": dates}
    else:
        results["dates"] = {part: results["date"] for part in args.parts}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))


if __name__ == "__main__":
    main()
