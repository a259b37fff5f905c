SELECT id, event_id::text AS event_id, event_type, payload::text AS body, occurred_at
FROM outbox
WHERE sent_at IS NULL
ORDER BY id
LIMIT $1
