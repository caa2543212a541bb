from __future__ import annotations

import json

import pytest

from producers.cli import main


def test_config_command_prints_the_effective_config_with_keys_masked(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTMEM_MEMORY__MEMORY_MANAGER__CONFIGS__API_KEY", "sk-secret")
    monkeypatch.setenv("LIGHTMEM_MEMORY__RETRIEVE_STRATEGY", "context")
    from producers.settings import get_settings

    get_settings.cache_clear()
    try:
        assert main(["config"]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    data = json.loads(out[out.index("{"):])
    assert data["retrieve_strategy"] == "context"
    assert data["memory_manager"]["configs"]["api_key"] == "***" and "sk-secret" not in out


def test_bad_configuration_is_a_clear_error_not_a_traceback(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTMEM_MEMORY__RETRIEVE_STRATEGY", "telepathy")
    from producers.settings import get_settings

    get_settings.cache_clear()
    try:
        assert main(["config"]) == 2
    finally:
        get_settings.cache_clear()
    assert "retrieve_strategy" in capsys.readouterr().err
