"""Server settings and allowed roots (issue 6, point 6): what a browser can and cannot reach.

`.streamlit/config.toml` sets the upload limit, XSRF protection and no static serving; a real `streamlit run`
is then probed over HTTP for files it must not serve. The dataset picker's roots are checked in core.
"""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.datasets.importing import list_datasets
from core.workspace import PathError, allowed_roots, datasets_dir, ensure_allowed


@pytest.fixture
def config_toml(project_root) -> Path:
    return project_root / ".streamlit" / "config.toml"


# ---------------------------------------------------------------------------------------------- config


def test_config_file_sets_the_safety_options(config_toml):
    server = tomllib.loads(config_toml.read_text())["server"]
    assert isinstance(server["maxUploadSize"], int) and 1 <= server["maxUploadSize"] <= 1000
    assert server["enableXsrfProtection"] is True
    assert server["enableStaticServing"] is False
    client = tomllib.loads(config_toml.read_text())["client"]
    assert client["showErrorDetails"] is False  # no tracebacks in the browser, whatever fails
    assert tomllib.loads(config_toml.read_text())["browser"]["gatherUsageStats"] is False


def test_streamlit_reads_the_options_as_written(project_root, config_toml):
    """The file is parsed by Streamlit itself (a typo or a wrong section would silently fall back to defaults)."""
    code = ("import streamlit.config as c; c.get_config_options(force_reparse=True); "
            "print(c.get_option('server.maxUploadSize'), c.get_option('server.enableXsrfProtection'), "
            "c.get_option('server.enableStaticServing'), c.get_option('client.showErrorDetails'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=project_root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = tomllib.loads(config_toml.read_text())["server"]["maxUploadSize"]
    assert out.stdout.split()[-4:] == [str(expected), "True", "False", "False"]


# ---------------------------------------------------------------------------------------------- real server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None
            ) -> tuple[int, bytes, http.client.HTTPResponse]:
    """One raw HTTP request: the path is sent exactly as written (no client-side `..` normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), response
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, project_root):
    """`streamlit run app.py` on a free localhost port with a private workspace; stopped at the end."""
    ws = tmp_path_factory.mktemp("server_ws")
    secret = ws / "datasets" / "mine" / "cats" / "notes.txt"
    secret.parent.mkdir(parents=True)
    secret.write_text("WORKSPACE-SECRET-7f3a9c")
    port = _free_port()
    log = open(ws / "server.log", "wb")
    env = dict(os.environ, FEWSHOT_WORKSPACE=str(ws), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=project_root, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while True:
            try:
                if request(port, "GET", "/_stcore/health")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError("the server did not start:\n" + (ws / "server.log").read_text()[-3000:])
            time.sleep(0.3)
        yield port, ws
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_health_endpoint_is_ok(server):
    port, _ = server
    status, body, _ = request(port, "GET", "/_stcore/health")
    assert status == 200 and body == b"ok"


TRAVERSALS = ["/app/static/../../etc/passwd", "/app/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
              "/app/static/..%2f..%2f..%2f..%2fetc%2fpasswd", "/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
              "/static/../../../../etc/passwd", "/media/../../../../etc/passwd", "/component/..%2f..%2fetc/passwd",
              "//etc/passwd", "/app/static//etc/passwd", "/_stcore/../../../etc/passwd"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_never_returns_system_files(server, path):
    port, _ = server
    status, body, _ = request(port, "GET", path)
    assert status != 200 or b"root:" not in body, (path, status, body[:200])


PROJECT_FILES = ["app.py", "core/runs/folder.py", ".streamlit/config.toml", "data/demo/CREDITS.md", "tests/conftest.py",
                 "README.md", "requirements.txt"]


def test_project_and_workspace_files_are_not_served(server, project_root):
    port, ws = server
    probes = []
    for rel in PROJECT_FILES:
        text = (project_root / rel).read_text().strip()
        marker = next(line for line in text.splitlines() if len(line.strip()) > 12).strip().encode()
        for prefix in ("/", "/app/static/", "/static/", "/media/", "/app/static/../", "/component/"):
            probes.append((prefix + rel, marker))
    for rel in ("workspace/datasets/mine/cats/notes.txt", "datasets/mine/cats/notes.txt"):
        for prefix in ("/", "/app/static/", "/media/"):
            probes.append((prefix + rel, b"WORKSPACE-SECRET-7f3a9c"))
    probes.append((str(ws / "datasets" / "mine" / "cats" / "notes.txt"), b"WORKSPACE-SECRET-7f3a9c"))
    leaks = []
    for path, marker in probes:
        status, body, _ = request(port, "GET", path)
        if status == 200 and marker in body:
            leaks.append(path)
    assert not leaks, leaks


@pytest.mark.parametrize("path", ["/app/static/", "/workspace/", "/media/", "/static/", "/core/", "/data/demo/"])
def test_no_directory_listing(server, path):
    port, _ = server
    status, body, _ = request(port, "GET", path)
    assert status != 200 or not any(word in body for word in (b"Index of", b"runs.py", b"config.toml",
                                                                 b"CREDITS.md", b"notes.txt")), (path, body[:300])


def test_uploads_need_the_xsrf_token(server):
    port, _ = server
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    boundary = "xxBOUNDARYxx"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    status, _, _ = request(port, "PUT", "/_stcore/upload_file/some-session/some-file", headers, body)
    assert status == 403
    # With the cookie the server hands out and the matching header, the XSRF check passes (and the made-up
    # session is then refused): the 403 above was the XSRF protection, not something else.
    _, _, health = request(port, "GET", "/_stcore/health")
    cookie = next(c for c in health.headers.get_all("Set-Cookie") if c.startswith("_streamlit_xsrf="))
    token = cookie.split(";")[0].split("=", 1)[1]
    status, _, _ = request(port, "PUT", "/_stcore/upload_file/some-session/some-file",
                           {**headers, "Cookie": f"_streamlit_xsrf={token}", "X-Xsrftoken": token}, body)
    assert status == 400


# ---------------------------------------------------------------------------------------------- allowed roots


def test_ensure_allowed_accepts_only_the_workspace_datasets_and_the_demo(workspace, tmp_path, demo_dataset,
                                                                          make_dataset):
    mine = make_dataset(datasets_dir() / "mine", per_class=1)
    assert ensure_allowed(mine) == mine.resolve()
    assert ensure_allowed(demo_dataset) == demo_dataset.resolve()
    assert ensure_allowed(demo_dataset / "fish") == (demo_dataset / "fish").resolve()
    assert allowed_roots() == [datasets_dir(), demo_dataset.resolve()]
    outside = make_dataset(tmp_path / "outside", per_class=1)
    (datasets_dir() / "link_out").symlink_to(outside, target_is_directory=True)
    (mine / "red" / "escape").symlink_to("/etc", target_is_directory=True)
    refused = ["/etc", "/", Path.home(), tmp_path, outside, workspace, workspace / "runs",
               datasets_dir() / "link_out", datasets_dir() / "link_out" / "red", mine / "red" / "escape",
               f"{datasets_dir()}/../../..", f"{datasets_dir()}/mine/../../runs", f"{demo_dataset}/../../core",
               f"{demo_dataset}/..", "~", f"{datasets_dir()}-evil", f"{demo_dataset}-copy", "relative/path"]
    for path in refused:
        with pytest.raises(PathError, match="outside the folders"):
            ensure_allowed(path)


def test_dataset_list_shows_only_real_folders_under_the_workspace(workspace, tmp_path, make_dataset):
    make_dataset(datasets_dir() / "mine", per_class=1)
    (datasets_dir() / ".import-half").mkdir()
    (datasets_dir() / "stray.txt").write_text("x")
    (datasets_dir() / "link_out").symlink_to(make_dataset(tmp_path / "outside", per_class=1),
                                            target_is_directory=True)
    assert [p.name for p in list_datasets()] == ["mine"]


@pytest.fixture
def _app_on(project_root):
    def _app_on(page: str, dataset: str) -> AppTest:
        at = AppTest.from_file(str(project_root / "app.py"), default_timeout=120)
        at.session_state["dataset"] = dataset
        at.run()
        at.switch_page(page)
        at.run()
        return at

    return _app_on


@pytest.fixture
def walked(monkeypatch) -> list[str]:
    """Every folder tree `os.walk` is asked to list during the test."""
    tops: list[str] = []
    real_walk = os.walk

    def spy(top, *args, **kwargs):
        tops.append(str(top))
        return real_walk(top, *args, **kwargs)

    monkeypatch.setattr(os, "walk", spy)
    return tops


@pytest.mark.parametrize("page", ["pages/1_dataset.py", "pages/3_augmentation.py", "pages/4_training.py"])
def test_pages_refuse_a_dataset_path_outside_the_roots(workspace, walked, page, _app_on):
    """Whatever put it in the session, a path outside the roots is neither listed nor read by any page."""
    at = _app_on(page, "/etc")
    assert not at.exception
    assert "outside the folders" in " ".join(e.value for e in at.error)
    assert not at.dataframe and "train_start" not in [b.key for b in at.button]
    assert not [top for top in walked if top.startswith("/etc")], walked


def test_label_page_does_not_copy_a_folder_outside_the_roots(workspace, walked, _app_on):
    at = _app_on("pages/2_label.py", "/etc")
    assert not at.exception
    at.button(key="lbl_make_copy").click()
    at.run()
    assert not at.exception
    assert "outside the folders" in " ".join(e.value for e in at.error)
    assert list(datasets_dir().iterdir()) == [] and at.session_state["dataset"] == "/etc"
    assert not [top for top in walked if top.startswith("/etc")], walked


# ---------------------------------------------------------------------------------------------- DNS rebinding


def websocket_upgrade(port: int, host: str, origin: str | None = None) -> int:
    """A raw WebSocket handshake on /_stcore/stream with this Host (and Origin): the HTTP status it gets."""
    headers = {"Host": host, "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "streamlit"}
    if origin:
        headers["Origin"] = origin
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.putrequest("GET", "/_stcore/stream", skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_websocket_is_refused_for_a_foreign_host_header(server):
    """DNS rebinding: a page on evil.example whose name is made to resolve to 127.0.0.1 sends its own Host and
    Origin. The app has no log-in, so such a page must not get a session."""
    port, _ = server
    assert websocket_upgrade(port, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}") == 101
    assert websocket_upgrade(port, f"localhost:{port}", f"http://localhost:{port}") == 101
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", f"localhost.:{port}x"):
        assert websocket_upgrade(port, host, f"http://{host}") != 101, host
        assert websocket_upgrade(port, host) != 101, host


def test_allowed_hosts_are_set_and_documented(config_toml, project_root):
    server = tomllib.loads(config_toml.read_text())["server"]
    assert set(server["allowedHosts"]) == {"localhost", "127.0.0.1", "::1"}
    assert "allowedHosts" in (project_root / "README.md").read_text()
