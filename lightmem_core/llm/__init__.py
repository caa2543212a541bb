"""LLM clients: one OpenAI-compatible backend, and wrappers for retries, rate limits and accounting."""

from lightmem_core.llm.base import CallTag, ChatMessage, LLMClient, LLMReply, ScriptedClient
from lightmem_core.llm.ratelimit import InProcessRateLimiter, NoRateLimiter, RateLimiter

__all__ = [
    "CallTag",
    "ChatMessage",
    "InProcessRateLimiter",
    "LLMClient",
    "LLMReply",
    "NoRateLimiter",
    "RateLimiter",
    "ScriptedClient",
]
