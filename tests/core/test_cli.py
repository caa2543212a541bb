from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from producers.cli import main
from workers.settings import get_settings


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """Settings are cached per process: let this test's environment be read, and drop it afterwards."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_config_command_prints_the_effective_config_with_keys_masked(capsys, monkeypatch: pytest.MonkeyPatch,
                                                                     fresh_settings: None) -> None:
    monkeypatch.setenv("LIGHTMEM_MEMORY__MEMORY_MANAGER__CONFIGS__API_KEY", "sk-secret")
    monkeypatch.setenv("LIGHTMEM_MEMORY__RETRIEVE_STRATEGY", "context")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out[out.index("{"):])
    assert data["retrieve_strategy"] == "context"
    assert data["memory_manager"]["configs"]["api_key"] == "***" and "sk-secret" not in out


def test_bad_configuration_is_a_clear_error_not_a_traceback(capsys, monkeypatch: pytest.MonkeyPatch, fresh_settings: None) -> None:
    monkeypatch.setenv("LIGHTMEM_MEMORY__RETRIEVE_STRATEGY", "telepathy")
    assert main(["config"]) == 2
    assert "retrieve_strategy" in capsys.readouterr().err


def test_a_configuration_error_is_one_line_naming_the_variable(capsys, monkeypatch: pytest.MonkeyPatch,
                                                                fresh_settings: None) -> None:
    monkeypatch.setenv("LIGHTMEM_MAX_RETRIES", "not-a-number-secret")
    assert main(["status"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "LIGHTMEM_MAX_RETRIES" in err and "valid integer" in err
    assert "not-a-number-secret" not in err  # the value given may be a secret
    get_settings.cache_clear()
    with pytest.raises(ValueError):  # --debug shows the whole error
        main(["--debug", "status"])


def test_lightmem_redis_serves_until_stopped(tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    import redis

    from workers.launch import free_port

    port = free_port()
    # A test run started in the background (`cmd &` in a script) ignores SIGINT, and a child inherits an
    # ignored signal: it would never see the Ctrl-C below. Handled here, it starts with the default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "producers.cli", "redis", "--port", str(port), "--dir",
                                 str(tmp_path / "r")], stdout=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert proc.stdout is not None
        assert f"LIGHTMEM_REDIS_URL=redis://127.0.0.1:{port}/0" in proc.stdout.readline() + proc.stdout.readline()
        client = redis.Redis(port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while True:
            try:
                assert client.set("k", "v") and client.get("k") == b"v"
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "lightmem redis did not start"
                time.sleep(0.1)
        client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:  # killed and its pipe closed, so a failure here does not leak into later tests
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
    assert (tmp_path / "r").is_dir()
