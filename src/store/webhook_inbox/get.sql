SELECT id, provider, event, object_id, ops_webhook_id, status, outcome, last_error, attempts,
    deliveries, received_at, last_received_at, processed_at, body, body_purged_at, host(source_ip) AS source_ip
FROM webhook_inbox WHERE id = $1
