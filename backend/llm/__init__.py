"""OpenAI-compatible LLM access with structured outputs, and the memory-management prompts."""

from backend.llm.client import LLMClient, LLMResult, build_llm

__all__ = ["LLMClient", "LLMResult", "build_llm"]
