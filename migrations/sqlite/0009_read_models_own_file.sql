-- The read models moved to their own file (licensd-read.db, attached to the log's readers as
-- `readmodels`), so projecting never takes the event log's write lock. Before this runs, licensd has
-- copied the webhook deliveries (their attempts are not in the log) into that file; everything else
-- projected is rebuilt there from the log (checkpoints start over). The tables leave licensd.db, so
-- unqualified names find the read models' file.
DROP TABLE webhook_deliveries;
DROP TABLE wh_webhooks;
DROP TABLE wh_licenses;
DROP TABLE rm_licenses;
DROP TABLE rm_credit_ledger;
DROP TABLE rm_audit_log;
DROP TABLE rm_commerce_events;
DROP TABLE rm_commerce_links;
DROP TABLE projection_checkpoints;
