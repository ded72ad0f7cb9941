-- Which process run holds an unanswered claim: a claim held by a run that is gone (or older than
-- LICENSD_IDEMPOTENCY_LEASE_SECS) may be taken over by a retry, which re-runs the command with
-- the same derived randomness. NULL on rows claimed before this column existed (an older run).
-- Identical DDL on both backends.

ALTER TABLE idempotency_keys ADD COLUMN run_id TEXT;
