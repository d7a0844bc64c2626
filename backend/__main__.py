"""``python -m backend ...``: the ``sentinel`` command (:func:`backend.entry.main`)."""

from backend.entry import main

main()
