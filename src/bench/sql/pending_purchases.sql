-- $4 pending purchases of distinct users, each with a provider id the fake mirrors;
-- the reconciler first looks at them $3 seconds from now.
INSERT INTO payments (id, user_id, tariff_id, pay_system, kind, status, amount_minor, currency, renew,
                      description, provider_idempotence_key, provider_payment_id, livemode, next_check_at)
SELECT gen_random_uuid(), gen_random_uuid(), $1, 'yookassa', 'purchase', 'pending', $2, 'RUB', false,
       'Subscription: Monthly', gen_random_uuid()::text, 'bench-' || lpad(i::text, 9, '0'), false,
       now() + make_interval(secs => $3)
  FROM generate_series(1, $4::int) i
RETURNING id, user_id, provider_payment_id
