SELECT count(*) FROM webhook_inbox WHERE status = 'processed'
