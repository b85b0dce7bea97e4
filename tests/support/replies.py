"""Replies the tests expect word for word, in more than one file."""

from __future__ import annotations

DAMAGED = (
    "This image is damaged or incomplete (it may have been cut off while saving or uploading), so I can't "
    "read it. Please save or export it again and upload the new file."
)
