-- Servers' own provider keys (bring your own key). `ciphertext` is the key's fields sealed with AES-256-GCM under
-- the bot's LIKENESS_SECRET_KEY, bound to (guild_id, provider): the plaintext is never stored, and a row copied to
-- another server or provider does not open. Who set it and when is all that is ever shown.
CREATE TABLE provider_keys (
    guild_id   INTEGER NOT NULL,
    provider   TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    set_by     INTEGER NOT NULL,
    set_at     REAL NOT NULL,
    PRIMARY KEY (guild_id, provider)
);
