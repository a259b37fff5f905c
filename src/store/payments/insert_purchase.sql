-- A purchase (or a tariff change paid now), recorded with its provider idempotence
-- key before the provider is called (the send that follows is counted here: it is
-- the first).
INSERT INTO payments (id, user_id, tariff_id, pay_system, kind, status, amount_minor, currency, renew,
                      return_url, description, provider_idempotence_key, livemode, next_check_at,
                      create_sends, receipt)
VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $12,
        now() + make_interval(secs => $13), 1, $14)
RETURNING {cols}
