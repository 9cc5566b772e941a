-- Per-account login throttling: consecutive failures and the lockout they earned. In the catalog,
-- so that every API replica, and a restarted one, sees the same count.
CREATE TABLE login_throttle (
    -- lower(username): the account as login looks it up, whether or not it exists, so that a
    -- lockout does not reveal which usernames are taken.
    username_key    text PRIMARY KEY,
    failures        int NOT NULL,
    last_failure_at timestamptz NOT NULL,
    locked_until    timestamptz NULL
);
