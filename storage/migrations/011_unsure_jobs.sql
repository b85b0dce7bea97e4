-- migrate: foreign_keys off
-- (storage.db runs this script with foreign keys off and checks them before it commits: SQLite's way to change a
-- table's constraints, here the jobs table that the ledger refers to.)
--
-- A paid submit whose outcome is unknown (the request may have reached fal or Runway, which cannot be asked) is
-- never re-sent on its own: the job waits in the new state 'unsure' for a manager's choice, its money held.
-- `submit_sent` is 1 from just before a submit goes out until its answer (or a refusal that proves it did not
-- arrive) is recorded, so a restart knows whether the provider may have it. `waiting_since`: since when the job
-- has been waiting, in a row, for provider capacity (429, busy) or disk space, for its overall deadline.
CREATE TABLE jobs_new (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id            INTEGER NOT NULL,
    channel_id          INTEGER NOT NULL,
    user_id             INTEGER NOT NULL,
    character_id        INTEGER REFERENCES characters (id) ON DELETE SET NULL,
    character_name      TEXT NOT NULL,
    character_version   INTEGER NOT NULL,
    kind                TEXT NOT NULL,
    provider            TEXT NOT NULL,
    model               TEXT NOT NULL,
    action              TEXT NOT NULL,
    prompt              TEXT NOT NULL,
    negative_prompt     TEXT,
    params              TEXT NOT NULL,
    bound               TEXT NOT NULL,
    cost_estimate       TEXT NOT NULL DEFAULT '0',
    cost_final          TEXT,
    state               TEXT NOT NULL DEFAULT 'queued' CHECK (state IN
                            ('queued', 'submitting', 'running', 'downloading', 'delivering', 'unsure', 'done', 'failed',
                             'canceled')),
    task_id             TEXT,
    status_url          TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    polls               INTEGER NOT NULL DEFAULT 0,
    next_poll_at        REAL,
    status_message_id   INTEGER,
    result_message_id   INTEGER,
    result_blob         TEXT,
    error               TEXT,
    parent_job_id       INTEGER,
    cancel_requested    INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    created_at          REAL NOT NULL,
    started_at          REAL,
    finished_at         REAL,
    late_check_until    REAL,
    account             TEXT,
    result_posted_whole INTEGER NOT NULL DEFAULT 0,
    submit_sent         INTEGER NOT NULL DEFAULT 0 CHECK (submit_sent IN (0, 1)),
    waiting_since       REAL
);
-- A job caught in 'submitting' by this upgrade may have been sent: it is looked up (or left to a manager).
INSERT INTO jobs_new
SELECT id, guild_id, channel_id, user_id, character_id, character_name, character_version, kind, provider, model,
       action, prompt, negative_prompt, params, bound, cost_estimate, cost_final, state, task_id, status_url, attempts,
       polls, next_poll_at, status_message_id, result_message_id, result_blob, error, parent_job_id, cancel_requested,
       created_at, started_at, finished_at, late_check_until, account, result_posted_whole,
       CASE state WHEN 'submitting' THEN 1 ELSE 0 END, NULL
FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_by_state ON jobs (state, provider);
CREATE INDEX jobs_by_guild ON jobs (guild_id, state);
