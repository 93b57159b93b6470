-- Statistics by day and by agent (GET /api/v1/stats) read messages and sessions by their time
-- of creation over a range of days, from indexes alone: every message's time (counted per
-- day), and for replies only (a partial index) what the counts per day and per agent need,
-- so no row of the table is read to count them (role too: SQLite reads a partial index as
-- covering only when it holds every column the query names).

CREATE INDEX messages_by_created ON messages (created_at);
CREATE INDEX replies_by_created ON messages (created_at, session_id, status, completed_at, role)
    WHERE role = 'assistant';
CREATE INDEX sessions_by_created ON sessions (created_at);
