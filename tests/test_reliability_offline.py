"""No network at run time unless asked: with every outbound connection blocked (and no HF_*_OFFLINE flags),
training with random weights, evaluation and prediction on local files work without even trying the network
(the Space is checked the same way in test_reliability_space_load.py); steps that need the network
(`--weights imagenet`, a Hub push) fail fast, both when the network refuses and when it silently drops packets,
with a message that says what to do."""

import errno
import json
import socket
import subprocess
import sys
import time

import huggingface_hub.constants
import pytest
from conftest import REPO_ROOT, TINY, make_mri_folder
from reliability_support import SCRIPTS, blocked_network_env, train_command
from test_space import save_tiny_model

from hf_mri import MriVggForImageClassification, WeightsError
from hf_mri.hub import HubPushError, push
from hf_mri.training import build_model

FAIL_FAST_S = 10


def test_the_blocking_sitecustomize_blocks_and_logs_but_keeps_loopback(tmp_path):
    env, log = blocked_network_env(tmp_path)
    code = (
        "import socket\n"
        "for attempt in (lambda: socket.create_connection(('huggingface.co', 443), timeout=5),\n"
        "                lambda: socket.socket().connect(('93.184.216.34', 443))):\n"
        "    try:\n"
        "        attempt()\n"
        "    except OSError as err:\n"
        "        print('blocked:', err)\n"
        "server = socket.create_server(('127.0.0.1', 0))\n"
        "socket.create_connection(server.getsockname(), timeout=5).close()\n"
        "print('loopback ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("blocked:") == 2 and "loopback ok" in run.stdout
    assert "getaddrinfo huggingface.co" in log.read_text() and "connect 93.184.216.34:443" in log.read_text()


# Runs the three CLIs in one interpreter (one start-up instead of three), each as `python scripts/X.py`.
DRIVER = """
import json, runpy, sys
codes = {}
for argv in json.loads(sys.argv[1]):
    sys.path.insert(0, argv[0].rsplit("/", 1)[0])  # scripts/, as `python scripts/X.py` would; _script_path drops it
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
        codes[argv[0]] = 0
    except SystemExit as exit:
        codes[argv[0]] = exit.code
print("EXIT CODES " + json.dumps(codes))
"""


@pytest.mark.slow
def test_train_evaluate_predict_work_offline_without_trying_the_network(tmp_path):
    data = make_mri_folder(tmp_path / "mri", n_per_class=10)
    out, evaluation = tmp_path / "run", tmp_path / "eval"
    train = train_command(data, out, "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no",
                          "--load_best_model_at_end", "False", "--class_weighting")[1:]  # fmt: skip
    evaluate = [str(SCRIPTS / "evaluate.py"), "--model", str(out), "--data_dir", str(data), "--output_dir",
                str(evaluation)]  # fmt: skip
    predict = [str(SCRIPTS / "predict.py"), "--model", str(out), *map(str, sorted(data.rglob("*.png"))[:4])]
    env, blocked = blocked_network_env(tmp_path)  # no HF_HUB_OFFLINE & co: nothing may even try to connect
    run = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([train, evaluate, predict])], env=env,
                         capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    codes = json.loads(run.stdout.split("EXIT CODES ", 1)[1])
    assert set(codes.values()) == {0}, (codes, run.stderr[-3000:])
    assert json.loads((out / "config.json").read_text())["pos_weight"] == 1.0  # class weighting (balanced data)
    assert json.loads((out / "config.json").read_text())["weights_source"] == "random"
    assert "eval_accuracy" in json.loads((evaluation / "eval_results.json").read_text())
    assert sum(line.startswith('{"path"') for line in run.stdout.splitlines()) == 4
    assert blocked.read_text() == "", f"tried the network: {blocked.read_text()}"


def _block_network(monkeypatch, mode: str) -> list[str]:
    """Block outbound connections in this process. `refused`: fail at once (no route, no DNS); `blackhole`: names
    resolve but connects hang until the socket's own timeout, as behind a firewall that drops packets."""
    attempts: list[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def local(host) -> bool:
        return str(host) in ("localhost", "127.0.0.1", "::1")

    def getaddrinfo(host, port, *args, **kwargs):
        if local(host):
            return real_getaddrinfo(host, port, *args, **kwargs)
        attempts.append(f"dns {host}")
        if mode == "refused":
            raise socket.gaierror(socket.EAI_NONAME, f"blocked: {host}")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port))]  # TEST-NET-1, never answers

    def connect(self, address):
        if local(address[0]):
            return real_connect(self, address)
        attempts.append(f"connect {address[0]}")
        if mode == "blackhole":
            time.sleep(min(self.gettimeout() or 60, 60))
            raise TimeoutError(errno.ETIMEDOUT, "timed out")
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # as for a user without the flag
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return attempts


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No ImageNet weights cached anywhere, so only the network could provide them."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.mark.parametrize("mode", ["refused", pytest.param("blackhole", marks=pytest.mark.slow)])
def test_imagenet_weights_fail_fast_with_the_way_out(monkeypatch, empty_caches, mode):
    attempts = _block_network(monkeypatch, mode)
    started = time.monotonic()
    with pytest.raises(WeightsError) as info:
        MriVggForImageClassification.from_vgg16("imagenet", **TINY)
    elapsed = time.monotonic() - started
    print(f"\n[offline] --weights imagenet ({mode}) failed after {elapsed:.2f} s")
    assert elapsed < FAIL_FAST_S and attempts  # it did try: the user asked for the network
    message = str(info.value)
    assert "Connect to the internet" in message and "weights=PATH" in message and "--weights random" in message


def test_weights_auto_falls_back_to_random_fast(monkeypatch, empty_caches, caplog):
    from hf_mri.arguments import ModelArguments

    _block_network(monkeypatch, "refused")
    started = time.monotonic()
    model = build_model(ModelArguments(weights="auto", image_size=64, vgg_layers=json.dumps(TINY["vgg_layers"]),
                                       hidden_size=32))  # fmt: skip
    assert time.monotonic() - started < FAIL_FAST_S
    assert model.config.weights_source == "random (ImageNet unavailable)"
    assert "TRAINING FROM RANDOM INITIALISATION" in caplog.text


def test_reachability_check_goes_through_a_configured_https_proxy(monkeypatch):
    from hf_mri.modeling_mri_vgg import _reachable

    _block_network(monkeypatch, "refused")  # no direct route: only the (local) proxy answers
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert not _reachable("huggingface.co")
    with socket.create_server(("127.0.0.1", 0)) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        assert _reachable("huggingface.co")
        monkeypatch.setenv("NO_PROXY", "huggingface.co")
        assert not _reachable("huggingface.co")


@pytest.mark.slow
def test_train_with_imagenet_offline_fails_before_loading_any_data(tmp_path):
    data = make_mri_folder(tmp_path / "mri", n_per_class=4)
    env, blocked = blocked_network_env(tmp_path)
    env.update(HF_HUB_CACHE=str(tmp_path / "hf_cache"), TORCH_HOME=str(tmp_path / "torch_home"))
    command = [
        arg if arg != "random" else "imagenet" for arg in train_command(data, tmp_path / "run", "--max_steps", "1")
    ]
    started = time.monotonic()
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    print(f"\n[offline] train.py --weights imagenet exited after {time.monotonic() - started:.1f} s (with start-up)")
    assert run.returncode != 0 and "WeightsError" in run.stderr and "--weights random" in run.stderr
    assert "Checking images" not in run.stderr  # failed before the (possibly long) data check
    assert "huggingface.co" in blocked.read_text()


@pytest.mark.parametrize(
    "mode, offline_flag, token, message",
    [
        ("refused", False, "hf_fake_token", "Cannot reach the Hub"),
        pytest.param("blackhole", False, "hf_fake_token", "Cannot reach the Hub", marks=pytest.mark.slow),
        ("refused", True, "hf_fake_token", "Offline mode is on"),
        ("refused", False, None, "No Hugging Face token found"),
    ],
)
def test_hub_push_fails_fast_with_the_way_out(tmp_path, monkeypatch, mode, offline_flag, token, message):
    save_tiny_model(tmp_path / "model")
    _block_network(monkeypatch, mode)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline_flag)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    started = time.monotonic()
    with pytest.raises(HubPushError, match=message) as info:
        push(tmp_path / "model", "me/mri-vgg16", token=token)
    elapsed = time.monotonic() - started
    print(f"\n[offline] push ({mode}, HF_HUB_OFFLINE={offline_flag}, token={bool(token)}) failed after {elapsed:.2f} s")
    assert elapsed < FAIL_FAST_S and "Nothing was uploaded" in str(info.value)
