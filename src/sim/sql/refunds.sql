SELECT payment_id::text AS payment_id, status, amount_minor, provider_refund_id
FROM refunds
