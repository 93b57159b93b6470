-- Sessions, messages, commands (the journal of work to do), approvals, and small settings.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE sessions (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    title           TEXT NOT NULL,
    agent           TEXT NOT NULL,
    project         TEXT,
    computer        TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    message_count   INTEGER NOT NULL DEFAULT 0,
    last_message_at TEXT
) STRICT;

CREATE TABLE messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    session_id   TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    role         TEXT NOT NULL,
    content      TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    completed_at TEXT,
    error        TEXT
) STRICT;
CREATE INDEX messages_by_session ON messages (session_id, seq);
CREATE INDEX messages_by_status ON messages (status) WHERE status IN ('pending', 'streaming');

CREATE TABLE commands (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    status      TEXT NOT NULL,
    session_id  TEXT REFERENCES sessions (id) ON DELETE CASCADE,
    payload     TEXT,
    created_at  TEXT NOT NULL,
    finished_at TEXT,
    result      TEXT,
    error       TEXT
) STRICT;
CREATE INDEX commands_by_session ON commands (session_id);
CREATE INDEX commands_unfinished ON commands (status) WHERE status IN ('queued', 'running');

CREATE TABLE approvals (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    message_id  TEXT NOT NULL,
    tool        TEXT NOT NULL,
    input       TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    resolved_at TEXT
) STRICT;
CREATE INDEX approvals_by_session ON approvals (session_id);
CREATE INDEX approvals_by_status ON approvals (status);
