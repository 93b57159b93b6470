-- Browser logins: one row per signed-in browser, named by the SHA-256 of its cookie's token
-- (the token itself is never stored), with the fingerprint of the API key it signed in with
-- and when it was last used (seconds since the epoch, written at most once a minute).

CREATE TABLE logins (
    id           TEXT PRIMARY KEY,
    key_id       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_used_s  REAL NOT NULL
) STRICT;
