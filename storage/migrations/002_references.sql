-- Reference views (with history: a replaced view keeps its row, marked replaced) and bound elements.
CREATE TABLE reference_views (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id      INTEGER NOT NULL,
    character_id  INTEGER NOT NULL REFERENCES characters (id) ON DELETE CASCADE,
    view          TEXT NOT NULL CHECK (view IN ('front', 'three_quarter', 'side', 'back', 'face')),
    original_blob TEXT NOT NULL,  -- the upload as received
    cleaned_blob  TEXT,           -- subject on flat white, for providers
    cutout_blob   TEXT,           -- subject with alpha, for sheets
    uploaded_by   INTEGER NOT NULL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    replaced_at   TEXT
);
-- at most one current image per view
CREATE UNIQUE INDEX reference_views_current ON reference_views (character_id, view) WHERE replaced_at IS NULL;

CREATE TABLE elements (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id      INTEGER NOT NULL,
    character_id  INTEGER NOT NULL REFERENCES characters (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    name_key      TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('outfit', 'prop', 'accessory', 'scene', 'other')),
    original_blob TEXT NOT NULL,
    cleaned_blob  TEXT,
    cutout_blob   TEXT,
    bound         INTEGER NOT NULL DEFAULT 1 CHECK (bound IN (0, 1)),
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (character_id, name_key)
);
CREATE INDEX elements_character ON elements (character_id);
