-- Webhook deliveries of one license in log order (workers/src/webhooks.rs): each delivery queued
-- from now on names its license (`subject`) and the log position of its event; a pending
-- delivery holds back the later ones of the same license to the same webhook. Rows queued
-- before this migration have neither and are not ordered. Identical DDL on both backends.
ALTER TABLE webhook_deliveries ADD COLUMN subject TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN pos_tx BIGINT;
ALTER TABLE webhook_deliveries ADD COLUMN pos_seq BIGINT;
CREATE INDEX webhook_deliveries_by_subject ON webhook_deliveries (webhook_id, subject, status);
