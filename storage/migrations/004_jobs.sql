-- The durable render queue. One row per unit of provider work; the worker moves it through the states
-- queued -> submitting -> running -> downloading -> delivering -> done | failed | canceled.
CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id          INTEGER NOT NULL,
    channel_id        INTEGER NOT NULL,
    user_id           INTEGER NOT NULL,
    character_id      INTEGER REFERENCES characters (id) ON DELETE SET NULL,
    character_name    TEXT NOT NULL,
    character_version INTEGER NOT NULL,
    kind              TEXT NOT NULL,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    action            TEXT NOT NULL,  -- what the member asked for
    prompt            TEXT NOT NULL,  -- the compiled prompt sent to the provider
    negative_prompt   TEXT,
    params            TEXT NOT NULL,  -- JSON: duration, aspect_ratio, camera, setting, notes
    bound             TEXT NOT NULL,  -- JSON: the references bound to this shot (label, role, blob)
    cost_estimate     TEXT NOT NULL DEFAULT '0',
    cost_final        TEXT,
    state             TEXT NOT NULL DEFAULT 'queued' CHECK (state IN
                          ('queued', 'submitting', 'running', 'downloading', 'delivering', 'done', 'failed', 'canceled')),
    task_id           TEXT,
    status_url        TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    polls             INTEGER NOT NULL DEFAULT 0,
    next_poll_at      REAL,
    status_message_id INTEGER,
    result_message_id INTEGER,
    result_blob       TEXT,
    error             TEXT,
    parent_job_id     INTEGER,
    cancel_requested  INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    created_at        REAL NOT NULL,
    started_at        REAL,
    finished_at       REAL
);
CREATE INDEX jobs_by_state ON jobs (state, provider);
CREATE INDEX jobs_by_guild ON jobs (guild_id, state);
