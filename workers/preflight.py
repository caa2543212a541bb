"""A worker checks what its role needs before it says "ready": Redis answers, its models load, the LLM
is reachable and takes the key, the store opens. On failure it logs the reason and exits non-zero, so
a supervisor (or an operator) sees a broken configuration at once, not at the first task."""

from __future__ import annotations

import logging
from typing import Any

from lightmem_core import factory
from lightmem_core.llm.cache import CachingClient
from workers.parts import WorkerParts
from workers.settings import QUEUES, DistributedSettings

log = logging.getLogger(__name__)
EXIT_PREFLIGHT = 3  # the worker's exit status when a check fails


def pipeline_summary(config: Any) -> tuple[str, bool]:
    """One line naming the pipeline this configuration runs, and whether it is the model-free one."""
    compressor = config.pre_compressor.model_name if config.pre_compress and config.pre_compressor else "off"
    if compressor == "entropy_compress" and config.pre_compressor.configs.entropy_config is not None:
        compressor = f"entropy ({config.pre_compressor.configs.entropy_config.model_name})"
    segmenter = config.topic_segmenter.model_name if config.topic_segment and config.topic_segmenter else "off"
    llm = config.memory_manager.model_name
    if llm != "verbatim" and config.memory_manager.configs is not None:
        llm = f"{llm} {config.memory_manager.configs.model or '(default model)'}"
    model_free = llm == "verbatim" and not compressor.startswith("llmlingua") and segmenter != "llmlingua-2"
    line = f"compression {compressor}, topic segmentation {segmenter}, extraction {llm}"
    return line, model_free


def roles_of(queues: list[str], parts: WorkerParts) -> set[str]:
    """The roles whose queues a worker consumes."""
    return {role for role in QUEUES if parts.settings.queue(role) in queues}


def thread_budget(settings: DistributedSettings, roles: set[str]) -> int | None:
    """The torch threads a worker of ``roles`` runs with; ``None``: torch's default. A store worker gets
    ``store_torch_threads`` unless it also compresses (then the compress stage wants every core)."""
    if "store" in roles and "compress" not in roles and settings.store_torch_threads:
        return settings.store_torch_threads
    return None


def preflight(parts: WorkerParts, roles: set[str]) -> list[str]:
    """Check what ``roles`` need; returns what was checked. Raises on the first problem."""
    checked = ["redis"]
    threads = thread_budget(parts.settings, roles)
    if threads is not None:
        try:
            import torch
        except ImportError:  # an embedder without torch (an OpenAI-compatible endpoint): nothing to budget
            threads = None
        else:
            torch.set_num_threads(threads)
    parts.state.r.ping()
    if "compress" in roles:
        _ = parts.compressor, parts.segmenter  # load the models now: "ready" means ready
        checked.append("compression models")
    if roles & {"extract", "store", "update"} and parts.config.memory_manager.model_name != "verbatim":
        factory.check_llm(parts.config)
        checked.append("LLM")
        if isinstance(client := parts.llm_client, CachingClient):
            client.cache.stats()  # the call cache is reachable now, or the worker does not start
            checked.append(f"call cache ({client.cache.where})")
    if "store" in roles or (not parts.settings.embedded_store and roles & {"extract", "update"}):
        _ = parts.components  # opens the store, loads the embedder
        checked.append("store and embedder")
    if threads is not None:
        checked.append(f"{threads} torch thread{'s' if threads > 1 else ''}")
    return checked


def run_preflight(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """``celeryd_after_setup``: the queues from ``-Q`` are known, the consumer has not started."""
    from workers.app import get_parts

    queues = list(instance.app.amqp.queues.consume_from) if instance is not None else []
    try:
        parts = get_parts()
        checked = preflight(parts, roles_of(queues, parts))
    except Exception as exc:
        log.critical("worker %s cannot start: %s: %s", sender, type(exc).__name__, exc)
        raise SystemExit(EXIT_PREFLIGHT) from exc  # not an Exception: Celery's signal dispatch lets it through
    log.info("worker %s checked: %s", sender, ", ".join(checked))
    line, model_free = pipeline_summary(parts.config)
    if model_free:
        log.warning("worker %s runs the MODEL-FREE pipeline (%s): no compression model and no LLM; "
                    "set LIGHTMEM_CONFIG_FILE for the whole pipeline", sender, line)
    else:
        log.info("worker %s runs the pipeline: %s", sender, line)
