-- Pending refunds due a follow-up, claimed for $2 seconds; the last column says
-- whether the refund is still inside the provider's key window ($3 hours).
UPDATE refunds SET next_attempt_at = now() + make_interval(secs => $2)
WHERE id IN (
    SELECT id FROM refunds
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED)
RETURNING id, payment_id, pay_system, provider_refund_id,
          created_at > now() - make_interval(hours => $3) AS in_key_window
