INSERT INTO webhook_inbox (id, provider, event, object_id, ops_webhook_id, status, body, body_sha256,
    content_type, source_ip, next_attempt_at)
VALUES ($1, $2, $3, $4, $5, 'received', $6, $7, $8, $9::text::inet, now() + interval '30 seconds')
RETURNING id, status
