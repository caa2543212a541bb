"""The graph tests share the LLM tests' fixtures: the scripted server and memories wired to it."""

from tests.llm.conftest import llm_server, make_llm_memory

__all__ = ["llm_server", "make_llm_memory"]
