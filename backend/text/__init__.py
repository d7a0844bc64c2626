"""Text primitives below every layer that builds prompts: tiktoken counting and truncation
(:mod:`backend.text.tokens`) and the quoting of untrusted data (:mod:`backend.text.quoting`).

They sit here, not in :mod:`backend.llm`, because memory renders its context with them and
the LLM layer renders memory: with them in ``llm`` the two packages imported each other.
"""
