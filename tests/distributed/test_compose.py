"""``docker/compose.yaml`` validates with Debian's docker-compose (no Docker engine needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_validates() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed (make test installs it)")
        pytest.skip("docker-compose is not installed")
    def config(**env: str) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"} | env
        return subprocess.run([tool, "-f", str(ROOT / "docker" / "compose.yaml"), "config"], capture_output=True,
                              text=True, timeout=60, cwd=ROOT, env=environ)

    refused = config()  # no default password: compose refuses to start Flower without one
    assert refused.returncode != 0 and "FLOWER_BASIC_AUTH" in refused.stderr
    done = config(FLOWER_BASIC_AUTH="admin:s3cret")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert {"redis", "qdrant", "postgres", "compress", "extract", "store", "update", "beat", "flower"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    gpu = services["compress"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert services["extract"]["command"][:2] == ["worker", "extract"]
    assert all(services[s]["environment"]["LIGHTMEM_QDRANT_URL"] for s in ("extract", "store", "update", "beat"))
    history = {s: services[s]["environment"]["LIGHTMEM_MEMORY__HISTORY_DB_URL"] for s in ("extract", "store", "update", "beat")}
    assert all(url.startswith("postgresql://") and "@postgres:5432/" in url for url in history.values())
    assert services["extract"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["flower"]["environment"]["LIGHTMEM_FLOWER_BASIC_AUTH"] == "admin:s3cret"
    # The whole pipeline by default: the config file with LLMLingua-2 and an LLM, the model folder mounted.
    assert all(services[s]["environment"]["LIGHTMEM_CONFIG_FILE"] == "/app/configs/distributed.yaml"
               for s in ("compress", "extract", "store", "update"))
    assert any(v.endswith(":/models:ro") for v in services["compress"]["volumes"])
    full = yaml.safe_load((ROOT / "configs" / "distributed.yaml").read_text())
    model = full["pre_compressor"]["configs"]["llmlingua_config"]["model_name"]
    assert full["pre_compress"] and full["topic_segment"] and model.startswith("/models/")
    assert full["memory_manager"]["model_name"] == "openai"
    free = config(FLOWER_BASIC_AUTH="a:b", LIGHTMEM_CONFIG_FILE="/app/configs/distributed-model-free.yaml")
    assert yaml.safe_load(free.stdout)["services"]["extract"]["environment"]["LIGHTMEM_CONFIG_FILE"].endswith(
        "distributed-model-free.yaml")
