"""Weight resolution through huggingface_hub: a mirror (HF_ENDPOINT) serving the official layout, the
cache afterwards, HF_HUB_OFFLINE, and an unreachable endpoint that fails fast with the fix in the text.

huggingface_hub reads its environment when it is imported, so each case runs in a fresh process.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from defm_ros.models import get_spec
from defm_ros.models.weights import CheckpointError, resolve_weights

from .helpers.checkpoints import write_checkpoint

MODEL = "defm_efficientnet_b0"
RESOLVE = ("import sys; from defm_ros import Encoder; from defm_ros.models import get_spec; "
           "from defm_ros.models.weights import resolve_weights; "
           f"p = resolve_weights(get_spec('{MODEL}'), None); Encoder('{MODEL}'); print(p)")


class Hub(http.server.BaseHTTPRequestHandler):
    """The Hub's file layout: {endpoint}/{repo}/resolve/{revision}/{file}, with the headers huggingface_hub reads."""

    files: dict[str, bytes] = {}
    requests: list[str] = []

    def _answer(self, body: bool) -> None:
        self.requests.append(f"{self.command} {self.path}")
        data = self.files.get(self.path)
        if data is None:
            self.send_response(404 if self.path != "/" else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's hook names
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def mirror(tmp_path):
    ckpt = write_checkpoint(tmp_path / "official.pth", MODEL)  # the published files are plain state dicts
    spec = get_spec(MODEL)
    Hub.files = {f"/{spec.hub_repo}/resolve/main/{spec.hub_file}": ckpt.read_bytes()}
    Hub.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", ckpt
    server.shutdown()


def _resolve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "DEFM_ROS_MODELS": str(tmp_path / "no_models"),
               "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", **env}
    return subprocess.run([sys.executable, "-c", RESOLVE], env=environ, capture_output=True, text=True, timeout=120)


def test_a_mirror_endpoint_serves_the_checkpoint_then_the_cache_does(tmp_path, mirror):
    endpoint, ckpt = mirror
    got = _resolve(tmp_path, HF_ENDPOINT=endpoint)
    assert got.returncode == 0, got.stderr
    path = Path(got.stdout.strip().splitlines()[-1])
    assert path.read_bytes() == ckpt.read_bytes() and str(tmp_path / "hf") in str(path)
    assert any(r.startswith("GET /leggedrobotics/defm/resolve/main/") for r in Hub.requests)
    Hub.requests.clear()
    again = _resolve(tmp_path, HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="1")  # offline: the cache, no request
    assert again.returncode == 0, again.stderr
    assert Path(again.stdout.strip().splitlines()[-1]).read_bytes() == ckpt.read_bytes() and Hub.requests == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_endpoint_fails_fast_with_the_fix(tmp_path):
    t0 = time.monotonic()
    got = _resolve(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    assert got.returncode != 0 and time.monotonic() - t0 < 30  # not huggingface_hub's minute of retries
    assert "is not reachable" in got.stderr and "huggingface-cli download" in got.stderr, got.stderr


def test_offline_without_a_cached_file_says_so(tmp_path):
    got = _resolve(tmp_path, HF_HUB_OFFLINE="1")
    assert got.returncode != 0 and "HF_HUB_OFFLINE is set" in got.stderr, got.stderr


def test_explicit_paths(tmp_path):
    spec = get_spec(MODEL)
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_weights(spec, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="is a folder"):
        resolve_weights(spec, tmp_path)
    (tmp_path / "w.pth").write_bytes(b"x")
    assert resolve_weights(spec, tmp_path / "w.pth") == tmp_path / "w.pth"


def test_the_models_folder_comes_before_the_hub(tmp_path, monkeypatch):
    spec = get_spec(MODEL)
    monkeypatch.setenv("DEFM_ROS_MODELS", str(tmp_path))
    (tmp_path / spec.local_file).write_bytes(b"x")
    assert resolve_weights(spec, None) == tmp_path / spec.local_file
    theia = get_spec("theia_small")  # Theia's files share one name: one folder each, as huggingface-cli puts it
    (tmp_path / "theia_small").mkdir()
    (tmp_path / "theia_small" / "model.safetensors").write_bytes(b"x")
    assert resolve_weights(theia, None) == tmp_path / "theia_small" / "model.safetensors"
