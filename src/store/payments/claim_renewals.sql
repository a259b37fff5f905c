-- The renewer's claim, one statement per batch. Up to $1 due subscriptions with a
-- usable saved method are leased for $2 seconds (other replicas skip them; a crash
-- leaves them due again when the lease ends), and under those row locks each
-- claimed period gets the renewal payment to send, committed before any provider
-- call:
-- - the period's open renewal not yet answered (a crash between commit and answer):
--   re-sent with its own key, its send counted unless past the key window ($4 hours);
-- - else, with nothing open or paid for the period, a new row: attempt = one past the
--   period's last (never a key used before), at least the subscription's count;
--   key = sha256 hex of 'renewal:<subscription>:<period start, µs>:<attempt>', the
--   same inputs always the same key; first check by the reconciler after $3 seconds.
-- A period whose renewal is paid or already answered gets no row here (the
-- reconciler follows an answered one). Answers the payment rows, whether the send
-- is past the key window or a re-send, and the saved method's provider id.
-- A renewal at a provider in $5 (receipts on) gets the subscription's receipt
-- (its purchase's customer) with the charged tariff's line, VAT code and tax
-- system of today, committed with the row like its key.
-- A subscription with a tariff change scheduled (`scheduled_tariff_id`) is charged
-- that tariff's price, on a row of that tariff: settling it switches the subscription.
WITH due AS (
    SELECT s.id FROM subscriptions s JOIN payment_methods m ON m.id = s.payment_method_id
    WHERE s.status IN ('active', 'past_due') AND s.auto_renew AND m.usable
      AND s.next_charge_at <= now()
    ORDER BY s.next_charge_at
    LIMIT $1
    FOR UPDATE OF s SKIP LOCKED
), claimed AS (
    -- By primary key from the ids as an array: joined to `due`, the generic plan
    -- (which cannot know LIMIT $1) hashed the whole table on every claim.
    UPDATE subscriptions s
       SET next_charge_at = now() + make_interval(secs => $2), updated_at = now()
     WHERE s.id = ANY (ARRAY(SELECT id FROM due))
    RETURNING s.id, s.user_id, s.tariff_id, s.price_minor, s.currency, s.current_period_end,
              s.renewal_attempts, s.payment_method_id, s.livemode, s.receipt, s.scheduled_tariff_id
), period AS (
    SELECT c.id AS subscription_id,
           (SELECT p.id FROM payments p
             WHERE p.subscription_id = c.id AND p.kind = 'renewal'
               AND p.period_start = c.current_period_end
               AND p.status IN ('pending', 'waiting_for_capture', 'succeeded')) AS open_id,
           (SELECT max(p.attempt) FROM payments p
             WHERE p.subscription_id = c.id AND p.kind = 'renewal'
               AND p.period_start = c.current_period_end) AS last_attempt
      FROM claimed c
), fresh AS (
    SELECT c.id, c.user_id, c.current_period_end, c.payment_method_id, c.livemode, c.receipt,
           m.pay_system, t.id AS tariff_id, t.name AS tariff_name, t.vat_code, t.tax_system_code,
           -- The subscription's own price, never today's tariff price; a scheduled
           -- change charges the new tariff's (a tariff's price never changes).
           CASE WHEN c.scheduled_tariff_id IS NULL THEN c.price_minor ELSE t.price_minor END AS price_minor,
           CASE WHEN c.scheduled_tariff_id IS NULL THEN c.currency ELSE t.currency END AS currency,
           GREATEST(c.renewal_attempts, COALESCE(pe.last_attempt + 1, 0)) AS attempt
      FROM claimed c
      JOIN period pe ON pe.subscription_id = c.id
      JOIN payment_methods m ON m.id = c.payment_method_id
      JOIN tariffs t ON t.id = COALESCE(c.scheduled_tariff_id, c.tariff_id)
     WHERE pe.open_id IS NULL
), inserted AS (
    INSERT INTO payments (id, user_id, tariff_id, subscription_id, pay_system, kind, status,
                          amount_minor, currency, renew, description, provider_idempotence_key,
                          payment_method_id, period_start, attempt, livemode, next_check_at,
                          create_sends, receipt)
    SELECT gen_random_uuid(), f.user_id, f.tariff_id, f.id, f.pay_system, 'renewal', 'pending',
           -- The provider that saved the method charges it.
           f.price_minor, f.currency, false, 'Subscription renewal: ' || f.tariff_name,
           encode(sha256(convert_to(format('renewal:%s:%s:%s', f.id,
               (extract(epoch FROM f.current_period_end) * 1000000)::bigint, f.attempt), 'UTF8')), 'hex'),
           f.payment_method_id, f.current_period_end, f.attempt, f.livemode,
           now() + make_interval(secs => $3), 1,
           CASE WHEN f.receipt IS NOT NULL AND f.pay_system = ANY ($5::text[]) THEN
               jsonb_set(jsonb_set(jsonb_set(jsonb_set(f.receipt, '{items,0,vat_code}', to_jsonb(f.vat_code)),
                                             '{tax_system_code}', COALESCE(to_jsonb(f.tax_system_code), 'null'::jsonb)),
                                   -- The line is what this renewal charges, whatever the template says.
                                   '{items,0,amount}',
                                   jsonb_build_object('value', to_char(f.price_minor / 100.0, 'FM9999999999999990.00'),
                                                      'currency', f.currency)),
                         -- Tariff::line, cut as Receipt::for_period cuts it.
                         '{items,0,description}', to_jsonb(left('Subscription: ' || f.tariff_name, 128)))
           END
      FROM fresh f
    ON CONFLICT DO NOTHING
    RETURNING {cols}, false AS past_window, false AS resent
), resumed AS (
    UPDATE payments p
       SET create_sends = p.create_sends
           + CASE WHEN p.created_at < now() - make_interval(hours => $4) THEN 0 ELSE 1 END
      FROM period pe
     WHERE p.id = pe.open_id AND p.status <> 'succeeded' AND p.provider_payment_id IS NULL
    RETURNING {p.cols}, p.created_at < now() - make_interval(hours => $4) AS past_window,
              p.create_sends > 1 AS resent
)
SELECT x.*, m.provider_method_id AS saved_method
  FROM (SELECT * FROM inserted UNION ALL SELECT * FROM resumed) x
  JOIN payment_methods m ON m.id = x.payment_method_id
