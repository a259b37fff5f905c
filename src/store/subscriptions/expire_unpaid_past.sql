-- The invariant: no subscription stays live $2 seconds past its period end without
-- a paid renewal for the period that starts there.
UPDATE subscriptions SET status = 'expired', ended_at = now(), next_charge_at = NULL, updated_at = now()
WHERE id IN (
    SELECT s.id FROM subscriptions s
    WHERE s.status IN ('active', 'past_due')
      AND s.current_period_end <= now() - make_interval(secs => $2)
      AND NOT EXISTS (
        SELECT 1 FROM payments p WHERE p.subscription_id = s.id AND p.kind = 'renewal'
        AND p.period_start = s.current_period_end
        AND p.status IN ('succeeded', 'partially_refunded', 'refunded'))
    ORDER BY s.current_period_end
    LIMIT $1
    FOR UPDATE OF s SKIP LOCKED)
RETURNING {cols}
