-- $1 saved cards of distinct users.
INSERT INTO payment_methods (id, user_id, pay_system, provider_method_id, title, livemode)
SELECT gen_random_uuid(), gen_random_uuid(), 'yookassa', 'pm-bench-' || i, 'Bank card *4444', false
  FROM generate_series(1, $1::int) i
