-- Notifications still waiting to be processed.
SELECT count(*) FROM webhook_inbox WHERE status = 'received'
