-- Due renewals with a usable saved method, claimed for `lease` seconds: other
-- replicas skip them meanwhile, and a crash leaves them due again afterwards.
UPDATE subscriptions SET next_charge_at = now() + make_interval(secs => $2)
WHERE id IN (
    SELECT s.id FROM subscriptions s JOIN payment_methods m ON m.id = s.payment_method_id
    WHERE s.status IN ('active', 'past_due') AND s.auto_renew AND m.usable
      AND s.next_charge_at <= now()
    ORDER BY s.next_charge_at
    LIMIT $1
    FOR UPDATE OF s SKIP LOCKED)
RETURNING id
