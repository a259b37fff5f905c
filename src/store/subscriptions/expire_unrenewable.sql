-- Live subscriptions past their period end with nothing left to wait for: auto-renew
-- off, no charge scheduled, no usable method, a renewal still in flight a day after
-- the end, or the latest renewal refused for a reason of ours for $2 seconds.
UPDATE subscriptions SET status = 'expired', ended_at = now(), next_charge_at = NULL, updated_at = now()
WHERE id IN (
    SELECT s.id FROM subscriptions s
    WHERE s.status IN ('active', 'past_due') AND s.current_period_end <= now() AND (
        NOT s.auto_renew
        OR s.next_charge_at IS NULL
        OR NOT EXISTS (SELECT 1 FROM payment_methods m WHERE m.id = s.payment_method_id AND m.usable)
        OR (s.current_period_end < now() - interval '24 hours' AND EXISTS (
            SELECT 1 FROM payments p WHERE p.subscription_id = s.id AND p.kind = 'renewal'
            AND p.period_start = s.current_period_end
            AND p.status IN ('pending', 'waiting_for_capture')))
        OR (s.current_period_end <= now() - make_interval(secs => $2) AND (
            SELECT p.status = 'failed' AND p.cancellation_party = 'shop' FROM payments p
            WHERE p.subscription_id = s.id AND p.kind = 'renewal'
            AND p.period_start = s.current_period_end
            ORDER BY p.attempt DESC, p.created_at DESC LIMIT 1)))
    ORDER BY s.current_period_end
    LIMIT $1
    FOR UPDATE OF s SKIP LOCKED)
RETURNING {cols}
