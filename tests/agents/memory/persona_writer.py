"""Child process of ``test_persona_cross_process``: one note of the trader, written into
the persona by another process (as ``sentinel scheduler run``'s refresh job would).
Forked by the session's ``forker`` (``CALL ...persona_writer:main``) or run as ``python -m
tests.agents.memory.persona_writer SETTINGS TRADER TEXT AS_OF [--announce]``."""

from __future__ import annotations

import sys
from datetime import datetime

from backend.agents.memory import PersonaManager
from backend.config import StoreSettings
from backend.embeddings import HashingEmbedder
from backend.storage import open_store


def main(*argv: str) -> None:
    settings, trader, text, as_of, *flags = argv or sys.argv[1:]
    store = open_store(StoreSettings.model_validate_json(settings), HashingEmbedder())
    if "--announce" in flags:  # the store is open: the write comes next
        print("ready", flush=True)
    try:
        changes = PersonaManager(store).update_from_text(
            trader, text, as_of=datetime.fromisoformat(as_of)
        )
        print(max(c.version for c in changes))
    finally:
        store.close()


if __name__ == "__main__":
    main()
