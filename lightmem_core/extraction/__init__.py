"""Extraction: buffered topic segments → memory entries, verbatim (``base``) or with one LLM call per
batch (``llm``, its prompt in ``prompt``)."""
