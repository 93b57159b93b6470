-- Approvals asked by programs outside the daemon need no session and no message: the table is
-- rebuilt with both columns nullable (SQLite cannot drop a NOT NULL in place). Tools a person
-- approved for the rest of a session ("remember": "session") are kept beside it. Sessions
-- gain their own model and system prompt (null: the agent's own).

CREATE TABLE approvals_next (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    session_id  TEXT REFERENCES sessions (id) ON DELETE CASCADE,
    message_id  TEXT,
    tool        TEXT NOT NULL,
    input       TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    resolved_at TEXT
) STRICT;
INSERT INTO approvals_next (seq, id, session_id, message_id, tool, input, status, created_at,
                            resolved_at)
    SELECT seq, id, session_id, message_id, tool, input, status, created_at, resolved_at
    FROM approvals ORDER BY seq;
DROP TABLE approvals;
ALTER TABLE approvals_next RENAME TO approvals;
CREATE INDEX approvals_by_session ON approvals (session_id);
CREATE INDEX approvals_by_status ON approvals (status);

CREATE TABLE remembered_tools (
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    tool        TEXT NOT NULL,
    approval_id TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (session_id, tool)
) STRICT;

ALTER TABLE sessions ADD COLUMN model TEXT;
ALTER TABLE sessions ADD COLUMN system_prompt TEXT;
