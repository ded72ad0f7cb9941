-- Which process run holds an unanswered claim, and since when: a claim held by a run that is gone,
-- or leased longer ago than LICENSD_IDEMPOTENCY_LEASE_SECS, may be taken over by a retry, which
-- re-runs the command with the same derived randomness and at the same time (created_at, the
-- first claim, is kept). NULL on rows claimed before these columns existed (an older run; the
-- lease then counts from created_at). Identical DDL on both backends.

ALTER TABLE idempotency_keys ADD COLUMN run_id TEXT;
ALTER TABLE idempotency_keys ADD COLUMN leased_at BIGINT;
