INSERT INTO webhook_inbox (id, provider, event, object_id, status, body, body_sha256, content_type,
    source_ip, next_attempt_at)
VALUES ($1, $2, $3, $4, 'received', $5, $6, $7, $8::text::inet, now() + interval '30 seconds')
ON CONFLICT (provider, event, object_id) WHERE ops_webhook_id IS NULL DO UPDATE SET
    deliveries = webhook_inbox.deliveries + 1, last_received_at = now(),
    body = CASE WHEN webhook_inbox.status = 'processed' THEN webhook_inbox.body ELSE EXCLUDED.body END,
    body_sha256 = CASE WHEN webhook_inbox.status = 'processed' THEN webhook_inbox.body_sha256 ELSE EXCLUDED.body_sha256 END,
    source_ip = EXCLUDED.source_ip
RETURNING id, status
