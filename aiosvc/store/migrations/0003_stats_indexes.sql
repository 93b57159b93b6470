-- Statistics by day (GET /api/v1/stats): messages and sessions are read by their time of
-- creation over a range of days. The messages' index also holds role and status, so the counts
-- of messages, replies and failed replies per day are read from the index alone.

CREATE INDEX messages_by_created ON messages (created_at, role, status);
CREATE INDEX sessions_by_created ON sessions (created_at);
