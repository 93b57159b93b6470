-- Session lists filtered by status, project or computer, newest first: each index walks one
-- filter's sessions in order of creation (seq), so a page starts at its cursor or offset
-- without reading the sessions before it.

CREATE INDEX sessions_by_status ON sessions (status, seq);
CREATE INDEX sessions_by_project ON sessions (project, seq);
CREATE INDEX sessions_by_computer ON sessions (computer, seq);
