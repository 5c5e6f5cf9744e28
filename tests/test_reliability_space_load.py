"""Load on the Space: space/app.py in its own process on 127.0.0.1 with a tiny local model and no network gets a
bounded burst of 200 requests from 8 concurrent gradio_client clients: all answered, none failed, memory flat,
no outbound connection attempted. Run with `pytest -s` to see p50/p95 latency and RSS."""

import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import REPO_ROOT, make_mri_folder
from reliability_support import blocked_network_env, rss_mib
from test_space import SPACE, free_port, save_tiny_model

CLIENTS = 8
WARMUP = 20
TOTAL = 200
REQUEST_TIMEOUT_S = 60
BURST_TIMEOUT_S = 420

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def space_process(tmp_path_factory):
    """(url, pid, blocked-attempt log) of `python space/app.py` serving a tiny local model, network blocked."""
    tmp = tmp_path_factory.mktemp("space_load")
    save_tiny_model(tmp / "model")
    env, blocked = blocked_network_env(tmp)
    port = free_port()
    env.update(HF_MRI_MODEL=str(tmp / "model"), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port))
    url = f"http://127.0.0.1:{port}/"
    with open(tmp / "server.log", "wb") as log:
        process = subprocess.Popen([sys.executable, str(SPACE / "app.py")], stdout=log, stderr=subprocess.STDOUT,
                                   env=env, cwd=REPO_ROOT)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (tmp / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the Space did not start within 180 s"
            time.sleep(0.5)
        yield url, process.pid, blocked
        assert process.poll() is None, "the Space process died under load"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_burst_of_200_requests_from_8_clients(space_process, tmp_path):
    from gradio_client import Client, handle_file

    url, pid, blocked = space_process
    files = [str(p) for p in sorted((SPACE / "examples").glob("*"))]
    files += [str(p) for p in sorted(make_mri_folder(tmp_path / "mri", n_per_class=2).rglob("*.png"))]
    local = threading.local()
    latencies: list[float] = []

    def one(index: int) -> str:
        if not hasattr(local, "client"):
            local.client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
        started = time.perf_counter()
        label, verdict, _, _ = local.client.submit(handle_file(files[index % len(files)]), api_name="/predict").result(
            timeout=REQUEST_TIMEOUT_S
        )
        latencies.append(time.perf_counter() - started)
        assert {row["label"] for row in label["confidences"]} == {"tumor", "no_tumor"} and "threshold" in verdict
        return label["label"]

    burst_started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(one, range(WARMUP), timeout=BURST_TIMEOUT_S))
        rss_warm = rss_mib(pid)
        remaining = BURST_TIMEOUT_S - (time.monotonic() - burst_started)
        answers += list(pool.map(one, range(WARMUP, TOTAL), timeout=remaining))
    elapsed = time.monotonic() - burst_started
    rss_end = rss_mib(pid)

    assert len(answers) == len(latencies) == TOTAL and set(answers) <= {"tumor", "no_tumor"}
    p50, p95 = (statistics.quantiles(latencies, n=100)[q - 1] for q in (50, 95))
    print(f"\n[space load] {TOTAL} requests, {CLIENTS} clients, {elapsed:.1f} s ({TOTAL / elapsed:.1f} req/s); "
          f"latency p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
          f"server RSS after {WARMUP}: {rss_warm:.0f} MiB, after {TOTAL}: {rss_end:.0f} MiB "
          f"({(rss_end / rss_warm - 1) * 100:+.1f}%)")  # fmt: skip
    assert rss_end <= rss_warm * 1.10, f"server RSS grew from {rss_warm:.0f} to {rss_end:.0f} MiB"
    assert blocked.read_text() == "", f"the Space tried the network: {blocked.read_text()}"
