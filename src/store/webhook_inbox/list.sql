SELECT id, provider, event, object_id, ops_webhook_id, status, outcome, last_error, attempts,
    deliveries, received_at, last_received_at, processed_at, body, body_purged_at, host(source_ip) AS source_ip
FROM webhook_inbox WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR provider = $2)
    AND ($5::timestamptz IS NULL OR received_at >= $5)
ORDER BY received_at DESC, id LIMIT $3 OFFSET $4
