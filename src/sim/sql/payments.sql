-- Every payment, with only the columns every schema version has.
SELECT id::text AS id, user_id::text AS user_id, subscription_id::text AS subscription_id,
       pay_system, kind, status, amount_minor, refunded_minor, provider_payment_id,
       period_start, created_at, now() - created_at > interval '25 hours' AS overdue
FROM payments
ORDER BY created_at, id
