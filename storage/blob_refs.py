"""Which blobs the database still names. Everything else in the blob store may be deleted (bot.jobs.retention)."""

from __future__ import annotations

from storage.db import Database
from storage.jobs import STILL_IN_PLAY

# Every column that names a blob. A finished shot's bound references are not needed any more (a re-roll reads
# the character again), so a deleted character's images go once its shots are over. A result stays named until
# its job lets go of it (storage.jobs.drop_posted_clips, only with LIKENESS_KEEP_CLIPS_DAYS). A member's start and
# end frames belong to the shot, not to a character: every job keeps them (a re-roll takes them again), and so does
# a shot waiting for its Confirm press.
_REFERENCED = f"""
SELECT original_blob FROM reference_views
UNION SELECT cleaned_blob FROM reference_views
UNION SELECT cutout_blob FROM reference_views
UNION SELECT original_blob FROM elements
UNION SELECT cleaned_blob FROM elements
UNION SELECT cutout_blob FROM elements
UNION SELECT blob FROM sheets
UNION SELECT result_blob FROM jobs
UNION SELECT json_extract(b.value, '$.blob') FROM jobs AS j, json_each(j.bound) AS b WHERE {STILL_IN_PLAY}
UNION SELECT json_extract(params, '$.start_frame') FROM jobs
UNION SELECT json_extract(params, '$.end_frame') FROM jobs
UNION SELECT json_extract(shot, '$.shot.start_frame') FROM pending_shots
UNION SELECT json_extract(shot, '$.shot.end_frame') FROM pending_shots
"""


async def referenced_blobs(db: Database) -> set[str]:
    return {str(row[0]) for row in await db.fetchall(_REFERENCED) if row[0] is not None}
