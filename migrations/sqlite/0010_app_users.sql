-- End users of apps (commands/src/app_users.rs). Their login, comment and password verifier are
-- sealed in the pii table; these two tables hold only keyed digests and times (Unix ms), so
-- neither a restart nor a burst of concurrent requests resets them. Identical DDL on both backends.

-- Sign-in softlock of app users, per user and per client IP (subjects are keyed digests); the
-- same shape and statements as dashboard_lockouts (commands/src/lockout.rs).
CREATE TABLE app_user_lockouts (
    subject      TEXT   PRIMARY KEY,
    failures     BIGINT NOT NULL,
    lockouts     BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    last_attempt BIGINT NOT NULL
);

-- Sign-ups without a license per client IP and app: one row per quota slot, taken by one atomic
-- upsert when the slot's last use is older than the window (so concurrent sign-ups cannot take
-- more slots than there are).
CREATE TABLE app_user_signups (
    subject    TEXT   NOT NULL,
    slot       BIGINT NOT NULL,
    used_at    BIGINT NOT NULL,
    PRIMARY KEY (subject, slot)
);
