UPDATE webhook_inbox SET next_attempt_at = now() + interval '60 seconds' WHERE id IN (
    SELECT id FROM webhook_inbox WHERE status = 'received' AND next_attempt_at <= now()
    ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id
