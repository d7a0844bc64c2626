"""``python -m backend.llm._llama_server ARGS``: llama-cpp-python's OpenAI-compatible
server (``python -m llama_cpp.server ARGS``) with a ``gemma3`` chat format registered.

The bundled GGUF carries no chat template, so llama-cpp-python falls back to the
llama-2 format, and its own ``gemma`` format drops system messages. ``gemma3`` is Gemma
3's template (Google's ``chat_template`` of gemma-3-*-it on Hugging Face): turns as
``<start_of_turn>user|model\\n...<end_of_turn>\\n``, the system message's text put at the
start of the first user turn, generation opened with ``<start_of_turn>model\\n``; the
tokenizer adds ``<bos>``. The system text stays the first thing in the prompt, so the
server's prefix reuse works on it.
"""

from __future__ import annotations

from typing import Any

from llama_cpp.llama_chat_format import ChatFormatterResponse, register_chat_format

CHAT_FORMAT = "gemma3"
_STOP = "<end_of_turn>"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


@register_chat_format(CHAT_FORMAT)  # type: ignore[untyped-decorator,unused-ignore]
def format_gemma3(messages: list[dict[str, Any]], **_: Any) -> ChatFormatterResponse:
    """The Gemma 3 prompt of ``messages`` (OpenAI chat roles)."""
    system = "\n\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
    prompt = ""
    for message in messages:
        role = message.get("role")
        if role == "system":
            continue
        text = _text(message.get("content"))
        if system:
            text, system = f"{system}\n\n{text}", ""
        turn = "model" if role == "assistant" else "user"
        prompt += f"<start_of_turn>{turn}\n{text}{_STOP}\n"
    if system:  # only a system message: it is the user turn
        prompt += f"<start_of_turn>user\n{system}{_STOP}\n"
    prompt += "<start_of_turn>model\n"
    return ChatFormatterResponse(prompt=prompt, stop=_STOP)


if __name__ == "__main__":
    from llama_cpp.server.__main__ import main

    main()  # type: ignore[no-untyped-call,unused-ignore]
