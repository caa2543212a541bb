"""The evaluation harness: ``lightmem eval locomo|longmemeval`` (see ``commands``).

``metrics`` (pure functions), ``systems`` (the pipeline and raw-turn baselines), ``runner`` (ingest,
retrieve, score), ``answering`` + ``prompts`` (LLM answers and judge), ``report`` (JSON, Markdown,
PNG), ``harness`` (one run end to end).
"""
