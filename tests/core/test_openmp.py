"""OpenMP's wait policy is passive in every process that imports lightmem (library or worker) before
torch loads, and an explicit setting is kept (``lightmem_core/openmp.py``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "import os, sys\n"
    "import {module}\n"
    "loaded_first = 'torch' in sys.modules\n"
    "import torch\n"
    "print(os.environ.get('OMP_WAIT_POLICY'), loaded_first)\n"
)


def probe(module: str, policy: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("module", ["lightmem_core", "lightmem_core.sensory.compressors.lingua_scorer", "workers.app"])
def test_the_policy_is_passive_before_torch_loads(module: str) -> None:
    assert probe(module, None) == ["PASSIVE", "False"]


def test_an_explicit_policy_is_kept() -> None:
    assert probe("workers.app", "ACTIVE") == ["ACTIVE", "False"]
