-- One auto-renewing subscription per saved card. The period ends in 12 hours;
-- RENEW_BEFORE (1 day) made every one due already.
INSERT INTO subscriptions (id, user_id, tariff_id, pay_system, status, price_minor, currency,
                           period_count, period_unit, current_period_start, current_period_end, auto_renew,
                           payment_method_id, next_charge_at, livemode)
SELECT gen_random_uuid(), m.user_id, $1, 'yookassa', 'active', $2, 'RUB', 1, 'month',
       now() - interval '1 month' + interval '12 hours', now() + interval '12 hours', true, m.id,
       now() - interval '1 second', false
  FROM payment_methods m
