"""Packaging (issue 13 item 5): a wheel builds from the source (``pip wheel --no-deps``, the
C media loop compiled by setup.py), installs into a fresh venv (no system site-packages; its
dependencies from the package index), and that install serves: ``chorus --version`` is the
package's version, the native extension imports from the venv, and ``chorus serve`` answers
an OPTIONS 200 and a token-guarded /metrics scrape, then stops cleanly on SIGTERM.

Slow (a build and a venv of every dependency: tens of seconds), and in the suite all the
same: this is the only test that runs Chorus the way an operator installs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import control
from tests.peers.ports import free_ports
from tests.peers.rawsip import RawUdp, parse_response, raw_request

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
# What a build reads: nothing else of the checkout goes into the copy it is built from.
SOURCES = ("pyproject.toml", "setup.py", "README.md", "control")
SKIP = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc", "*.egg-info")
TOKEN = "packaging-token-0123456789"


def _env() -> dict[str, str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)  # the checkout must not leak into the venv's imports
    return env


def _run(argv: list[str], *, cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def _start(argv: list[str], *, cwd: Path) -> subprocess.Popen[str]:
    """``argv`` started now, to be finished by ``_finish`` after other work."""
    return subprocess.Popen(
        argv, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process: subprocess.Popen[str], *, timeout: float = 600) -> str:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, f"{process.args}\n{out[-4000:]}\n{err[-4000:]}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the wheel, the fresh venv it is installed in)."""
    base = tmp_path_factory.mktemp("packaging")
    # The venv (and its seeded pip) is made while the wheel builds: neither reads the other.
    venv = base / "venv"
    making_venv = _start([sys.executable, "-m", "venv", str(venv)], cwd=base)
    try:
        source = base / "source"
        source.mkdir()
        for name in SOURCES:
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, source / name, ignore=SKIP)
            else:
                shutil.copy2(path, source / name)
        wheels = base / "wheels"
        _run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(source)],
            cwd=base,
        )
    finally:
        _finish(making_venv)  # waited for (and checked) even if the build failed
    [wheel] = wheels.glob("chorus-*.whl")
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    _run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], cwd=base)
    yield wheel, venv


def test_the_wheel_holds_every_module_and_the_built_extension(
    installed: tuple[Path, Path],
) -> None:
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "control").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert modules and modules <= names, sorted(modules - names)
    built = [n for n in names if n.startswith("control/media/native/_media.") and n.endswith(".so")]
    assert len(built) == 1, sorted(names)
    assert "control/media/native/_media.pyi" in names
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "chorus = control.cli:main" in text


def test_version_and_imports_come_from_the_venv(installed: tuple[Path, Path]) -> None:
    _, venv = installed
    out = _run([str(venv / "bin" / "chorus"), "--version"], cwd=venv)
    assert out.strip() == f"chorus {control.__version__}"
    probe = (
        "import control, control.media.native as n; from control.media.native import _media; "
        "print(control.__file__); print(_media.__file__); print(control.package_version())"
    )
    package, extension, version = _run(
        [str(venv / "bin" / "python"), "-c", probe], cwd=venv
    ).split()
    assert Path(package).is_relative_to(venv) and Path(extension).is_relative_to(venv)
    assert version == control.__version__


def test_the_installed_chorus_serves(installed: tuple[Path, Path]) -> None:
    _, venv = installed
    work = venv.parent / "serve"
    work.mkdir()
    sip_port, web_port = free_ports(2)
    config = work / "chorus.toml"
    config.write_text(
        f'[sip]\nlisten = ["udp:127.0.0.1:{sip_port}"]\n'
        f'[msrp]\nlisten = ["tcp:127.0.0.1:0"]\n'
        f'[server]\nspool_dir = "{work / "spool"}"\n'
        f'[web]\nlisten = "http:127.0.0.1:{web_port}"\n'
        f'[api]\ntoken = "{TOKEN}"\n'
    )
    _run([str(venv / "bin" / "chorus"), "check-config", str(config)], cwd=work)
    log = (work / "chorus.log").open("wb")
    process = subprocess.Popen(
        [str(venv / "bin" / "chorus"), "serve", "--config", str(config)],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=log,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    ready = threading.Event()

    def watch() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if b"chorus ready" in line:
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not ready.wait(0.1):
            assert process.poll() is None and time.monotonic() < deadline, (
                work / "chorus.log"
            ).read_text()
        with RawUdp() as udp:
            udp.send(raw_request("OPTIONS", sip_port, local_port=udp.port), sip_port)
            data = udp.receive(10.0)
        assert data is not None
        response = parse_response(data)
        assert response.status == 200 and "INVITE" in (response.headers.get("Allow") or "")
        request = urllib.request.Request(
            f"http://127.0.0.1:{web_port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as scrape:
            families = {f.name: f for f in text_string_to_metric_families(scrape.read().decode())}
        [options] = [
            s
            for s in families["chorus_sip_requests_received"].samples
            if s.labels == {"method": "OPTIONS"}
        ]
        assert options.value == 1
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        log.close()
    assert code == 0, (work / "chorus.log").read_text()
    assert "Traceback" not in (work / "chorus.log").read_text()
