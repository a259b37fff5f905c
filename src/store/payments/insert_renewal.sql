INSERT INTO payments (id, user_id, tariff_id, subscription_id, pay_system, kind, status, amount_minor,
                      currency, renew, description, provider_idempotence_key, payment_method_id,
                      period_start, attempt, livemode, next_check_at)
VALUES ($1, $2, $3, $4, $5, 'renewal', 'pending', $6, $7, false, $8, $9, $10, $11, $12, $13,
        now() + make_interval(secs => $14))
RETURNING {cols}
