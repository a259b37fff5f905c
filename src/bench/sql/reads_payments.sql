-- $4 succeeded payments for each of the users $1, one a day back in time.
INSERT INTO payments (id, user_id, tariff_id, pay_system, kind, status, amount_minor, currency, renew,
                      description, provider_idempotence_key, provider_payment_id, livemode, created_at,
                      captured_at)
SELECT gen_random_uuid(), u, $2, 'yookassa', 'purchase', 'succeeded', $3, 'RUB', false,
       'Subscription: Monthly', gen_random_uuid()::text, 'bench-' || gen_random_uuid(), false,
       now() - make_interval(days => i), now() - make_interval(days => i)
  FROM unnest($1::uuid[]) u, generate_series(1, $4::int) i
