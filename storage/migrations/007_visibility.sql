-- Character visibility: 'server' (every member), 'private' (its owner) or 'roles' (its owner and members holding
-- one of visible_role_ids, a JSON list of role ids). Members with Manage Server see every character.
-- Existing characters stay visible to the whole server.
ALTER TABLE characters ADD COLUMN visibility TEXT NOT NULL DEFAULT 'server'
    CHECK (visibility IN ('server', 'private', 'roles'));
ALTER TABLE characters ADD COLUMN visible_role_ids TEXT NOT NULL DEFAULT '[]';
