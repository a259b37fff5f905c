-- Open payments due a check (NULL next_check_at on an open payment means due now),
-- claimed for $2 seconds.
UPDATE payments SET next_check_at = now() + make_interval(secs => $2),
                    lease_until = now() + make_interval(secs => $2)
WHERE id IN (
    SELECT id FROM payments
    WHERE status IN ('pending', 'waiting_for_capture') AND review_reason IS NULL
      AND (next_check_at <= now() OR next_check_at IS NULL)
    ORDER BY next_check_at NULLS FIRST
    LIMIT $1
    FOR UPDATE SKIP LOCKED)
RETURNING {cols}
