-- The read models move to their own file (licensd-read.db, attached as `readmodels`), so projecting
-- never takes the event log's write lock. Everything projected is rebuilt there from the log (their
-- checkpoints start over); the webhook deliveries' attempt bookkeeping is not in the log and is
-- copied, so no delivery is sent again or lost. The tables then leave licensd.db, so unqualified
-- names find the read models' file.
INSERT INTO readmodels.webhook_deliveries SELECT * FROM main.webhook_deliveries WHERE true
    ON CONFLICT (delivery_id) DO NOTHING;

DROP TABLE main.webhook_deliveries;
DROP TABLE main.wh_webhooks;
DROP TABLE main.wh_licenses;
DROP TABLE main.rm_licenses;
DROP TABLE main.rm_credit_ledger;
DROP TABLE main.rm_audit_log;
DROP TABLE main.rm_commerce_events;
DROP TABLE main.rm_commerce_links;
DROP TABLE main.projection_checkpoints;
