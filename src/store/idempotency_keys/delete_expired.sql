DELETE FROM idempotency_keys
WHERE (user_id, scope, key) IN (
    SELECT user_id, scope, key FROM idempotency_keys
    WHERE created_at < now() - interval '24 hours'
      AND (locked_until IS NULL OR locked_until < now())
    LIMIT $1
    FOR UPDATE SKIP LOCKED)
