-- Raw bodies are personal data: dropped $1 seconds after the last delivery (failed
-- rows after 180 days); the hash and the outcome stay.
UPDATE webhook_inbox SET body = NULL, body_purged_at = now()
WHERE id IN (
    SELECT id FROM webhook_inbox
    WHERE body IS NOT NULL AND status <> 'received' AND (
        (status <> 'failed' AND last_received_at < now() - make_interval(secs => $1))
        OR last_received_at < now() - interval '180 days')
    LIMIT $2
    FOR UPDATE SKIP LOCKED)
