-- Active subscriptions at their period end whose renewal is still in flight: access
-- continues as past_due (expire_unrenewable ends them a day later).
UPDATE subscriptions SET status = 'past_due', past_due_since = now(), updated_at = now()
WHERE id IN (
    SELECT s.id FROM subscriptions s
    WHERE s.status = 'active' AND s.current_period_end <= now()
      AND EXISTS (
        SELECT 1 FROM payments p WHERE p.subscription_id = s.id AND p.kind = 'renewal'
        AND p.period_start = s.current_period_end AND p.status IN ('pending', 'waiting_for_capture'))
    LIMIT $1
    FOR UPDATE OF s SKIP LOCKED)
RETURNING {cols}
