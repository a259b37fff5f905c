-- A second provider payment that took money for one of ours: recorded as a payment
-- of its own, already succeeded and held for review. Its key is derived from the
-- provider id, so a repeated notification inserts nothing. It keeps the receipt
-- line of the payment it duplicates, for its sum: its refund's return receipt
-- is made from it.
INSERT INTO payments (id, user_id, tariff_id, pay_system, kind, status, amount_minor, currency,
                      renew, description, provider_idempotence_key, provider_payment_id, captured_at,
                      review_reason, livemode, receipt)
VALUES ($1, $2, $3, $4, 'purchase', 'succeeded', $5, $6, false, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT DO NOTHING
RETURNING {cols}
