"""Errors the models raise for inputs a user can fix (as opposed to bugs): each message says what to do.

`CheckpointError` (models/checkpoint.py) covers unusable checkpoints; `ModelInputError` covers logs a
model cannot learn from and a missing language-model package. The CLI prints both as one line.
"""

from __future__ import annotations


class ModelInputError(ValueError):
    """The logs or the environment cannot train or evaluate this model; the message says what to do."""
