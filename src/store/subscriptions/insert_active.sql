-- A first purchase paid: a new active subscription at the price it was bought at.
INSERT INTO subscriptions (id, user_id, tariff_id, pay_system, status, price_minor, currency,
                           period_count, period_unit, current_period_start, current_period_end,
                           auto_renew, payment_method_id, next_charge_at, livemode, billing_anchor,
                           receipt)
VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $9, $15)
RETURNING {cols}
