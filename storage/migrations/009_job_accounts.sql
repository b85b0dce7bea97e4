-- A shot stays on the provider account it was sent with. `jobs.account` says which: '' for the bot's own key, a
-- server key's version (see storage.provider_keys.key_version) for a server's; NULL for jobs not yet taken from
-- the queue (and those from before this migration: they follow the server's current key, as before).
ALTER TABLE jobs ADD COLUMN account TEXT;

-- A server key that was replaced or removed while shots sent with it were still rendering. It is kept, sealed as
-- before, only until those shots end (their late checks included), then deleted: the provider only answers for a
-- task to the account that made it.
CREATE TABLE retired_provider_keys (
    guild_id   INTEGER NOT NULL,
    provider   TEXT NOT NULL,
    version    TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    retired_at REAL NOT NULL,
    PRIMARY KEY (guild_id, provider, version)
);

-- 1 once the result was posted in its channel as the very clip that was rendered (not re-encoded smaller, not a
-- still): only such clips may be dropped from the data folder after LIKENESS_KEEP_CLIPS_DAYS (bot.retention).
ALTER TABLE jobs ADD COLUMN result_posted_whole INTEGER NOT NULL DEFAULT 0;
