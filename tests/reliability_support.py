"""Helpers for the test_reliability_* files: the train command line, a network-blocking sitecustomize for
subprocesses (loopback still allowed, every blocked attempt logged), and RSS reading."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from conftest import REPO_ROOT
from test_training import TINY_FLAGS

SCRIPTS = REPO_ROOT / "scripts"
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")

# Imported by every Python process started with `blocked_network_env`: non-loopback connects and name lookups
# fail at once (like an unplugged cable) and are appended to $HF_MRI_BLOCKED_LOG.
SITECUSTOMIZE = """
import errno, ipaddress, os, socket

_LOG = os.environ.get("HF_MRI_BLOCKED_LOG")


def _local(host):
    if host in (None, "", "localhost") or str(host).endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _blocked(what):
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} {what}\\n")


def _guard(original, name):
    def guarded(self, address, *args):
        if isinstance(address, tuple) and not _local(address[0]):
            _blocked(f"{name} {address[0]}:{address[1]}")
            raise OSError(errno.ENETUNREACH, f"network unreachable (blocked by the test): {address[0]}")
        return original(self, address, *args)

    return guarded


socket.socket.connect = _guard(socket.socket.connect, "connect")
socket.socket.connect_ex = _guard(socket.socket.connect_ex, "connect_ex")
_getaddrinfo = socket.getaddrinfo


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _local(host.decode() if isinstance(host, bytes) else host):
        _blocked(f"getaddrinfo {host}")
        raise socket.gaierror(socket.EAI_NONAME, f"name lookup blocked by the test: {host}")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _guarded_getaddrinfo
"""


def subprocess_env(*first_on_path: Path) -> dict[str, str]:
    """This environment, with this checkout's `hf_mri` imported first (whatever the editable install points to)."""
    path = [*map(str, first_on_path), str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1"}


def blocked_network_env(tmp_path: Path, hf_offline: bool = False) -> tuple[dict[str, str], Path]:
    """Environment for a subprocess without network (loopback works); returns it and the blocked-attempt log.
    With `hf_offline=False` the HF_*_OFFLINE variables are removed, so libraries would try the network."""
    site = tmp_path / "blocked_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "blocked_attempts.log"
    log.touch()
    env = {key: value for key, value in subprocess_env(site).items() if hf_offline or key not in OFFLINE_VARS}
    env.update(
        HF_MRI_BLOCKED_LOG=str(log),
        HF_HUB_DISABLE_TELEMETRY="1",
        GRADIO_ANALYTICS_ENABLED="False",
    )
    return env, log


def train_command(data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """`python scripts/train.py` with the tiny model and the given extra flags."""
    return [
        sys.executable,
        str(SCRIPTS / "train.py"),
        "--data_dir",
        str(data_dir),
        "--output_dir",
        str(output_dir),
        *TINY_FLAGS,
        *extra,
    ]


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size (VmRSS) of a process in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
