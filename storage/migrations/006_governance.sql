-- Server governance: the rules admins set, the money ledger, confirmations waiting for a press, and the audit log.

-- Everything an admin sets in /settings beyond provider and negative prompts, as one JSON object validated by
-- bot.domain.ServerRules (NULL: every default).
ALTER TABLE guild_settings ADD COLUMN rules TEXT;

-- A render the provider may still finish after the bot gave up waiting: looked at again until this time, and
-- charged if it succeeded (the provider bills it whether or not the bot was still waiting).
ALTER TABLE jobs ADD COLUMN late_check_until REAL;

-- Append-only money ledger, in USD millionths. A job's estimate is reserved when it is queued (+), released when
-- it ends (-) and charged (+) when the provider bills it, so the sum of a job's entries is what it holds or cost,
-- and the sum over any set of jobs is their balance. Every entry of a job carries the UTC day it was reserved,
-- so daily and monthly caps count a job once, in the period it was queued.
CREATE TABLE ledger (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    job_id     INTEGER NOT NULL REFERENCES jobs (id),
    entry      TEXT NOT NULL CHECK (entry IN ('reserve', 'release', 'charge')),
    micros     INTEGER NOT NULL CHECK (CASE entry WHEN 'release' THEN micros <= 0 ELSE micros >= 0 END),
    day        TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (job_id, entry)
);
CREATE INDEX ledger_by_guild_day ON ledger (guild_id, day);
CREATE INDEX ledger_by_user_day ON ledger (guild_id, user_id, day);
-- Running totals kept by the database in the same transaction as each entry, so a cap check is one lookup however
-- long the month: per member per day (period 'YYYY-MM-DD', user_id the member) and per server per month (period
-- 'YYYY-MM', user_id 0). `micros` is spent or held; `charged` is spent.
CREATE TABLE ledger_totals (
    guild_id INTEGER NOT NULL,
    period   TEXT NOT NULL,
    user_id  INTEGER NOT NULL,
    micros   INTEGER NOT NULL,
    charged  INTEGER NOT NULL,
    PRIMARY KEY (guild_id, period, user_id)
);
CREATE TRIGGER ledger_totals_add AFTER INSERT ON ledger BEGIN
    INSERT INTO ledger_totals VALUES
        (NEW.guild_id, NEW.day, NEW.user_id, NEW.micros, CASE NEW.entry WHEN 'charge' THEN NEW.micros ELSE 0 END),
        (NEW.guild_id, substr(NEW.day, 1, 7), 0, NEW.micros, CASE NEW.entry WHEN 'charge' THEN NEW.micros ELSE 0 END)
    ON CONFLICT (guild_id, period, user_id) DO UPDATE
        SET micros = micros + excluded.micros, charged = charged + excluded.charged;
END;
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;

-- A costly shot waiting for its member to press Confirm (the shot as JSON; expires).
CREATE TABLE pending_shots (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    character_id INTEGER NOT NULL REFERENCES characters (id) ON DELETE CASCADE,
    shot       TEXT NOT NULL,
    created_at REAL NOT NULL
);

-- Refusals and admin changes, readable with /settings audit.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    action     TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX audit_by_guild ON audit_log (guild_id, id);
