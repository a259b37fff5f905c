INSERT INTO refunds (id, payment_id, pay_system, amount_minor, currency, status, reason,
    initiated_by, provider_idempotence_key, provider_refund_id)
VALUES ($1, $2, $3, $4, $5, 'pending', 'made at the provider', 'provider', $6, $7)
ON CONFLICT DO NOTHING RETURNING id
