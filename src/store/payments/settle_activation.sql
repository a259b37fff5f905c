-- A pending purchase paid and its user without a live subscription: the common
-- case of `settle`, whole, in one statement (no lock held across round trips).
-- `locked` re-checks on the latest row version what the caller decided on; with 0
-- rows nothing else happens and the caller takes the locked path. A live
-- subscription that appeared meanwhile fails the insert on
-- subscriptions_one_live_per_user, which undoes the statement whole: the locked
-- path again.
--   $1 payment, $2 captured_at, $3/$4/$5 the saved method (provider id, title, a
--   new id; $3 null: none saved), $6 the new subscription's id, $7/$8 its period,
--   $9 auto_renew, $10 next_charge_at, $11/$12/$13 the events (id, type, body), in order,
--   $14 the provider's id (recorded if ours has none: a create's answer).
-- The row is locked by its primary key (a CTE of its own: written as one WHERE,
-- the planner proves the partial index payments_open usable and walks all of it
-- for one id), and the decision checked on the version locked.
WITH pay AS (
    SELECT id, user_id, tariff_id, pay_system, amount_minor, currency, livemode,
           kind, status, review_reason, subscription_id, receipt
      FROM payments WHERE id = $1 FOR UPDATE
), locked AS (
    SELECT * FROM pay
     WHERE kind = 'purchase' AND status = 'pending' AND review_reason IS NULL
       AND subscription_id IS NULL
), method AS (
    INSERT INTO payment_methods (id, user_id, pay_system, provider_method_id, title, livemode)
    SELECT $5, l.user_id, l.pay_system, $3, $4, l.livemode FROM locked l WHERE $3::text IS NOT NULL
    ON CONFLICT (pay_system, provider_method_id) DO UPDATE SET title = EXCLUDED.title
    RETURNING id
), sub AS (
    INSERT INTO subscriptions (id, user_id, tariff_id, pay_system, status, price_minor, currency,
                               period_count, period_unit, current_period_start, current_period_end,
                               auto_renew, payment_method_id, next_charge_at, livemode,
                               billing_anchor, receipt)
    SELECT $6, l.user_id, l.tariff_id, l.pay_system, 'active', l.amount_minor, l.currency,
           t.period_count, t.period_unit, $7, $8, $9, (SELECT id FROM method), $10, l.livemode, $7,
           l.receipt
      FROM locked l JOIN tariffs t ON t.id = l.tariff_id
    RETURNING id
), paid AS (
    UPDATE payments p
       SET status = 'succeeded',
           captured_at = COALESCE($2, p.captured_at),
           provider_payment_id = COALESCE(p.provider_payment_id, NULLIF($14, '')),
           payment_method_id = COALESCE(p.payment_method_id, (SELECT id FROM method)),
           subscription_id = (SELECT id FROM sub),
           period_start = $7,
           period_end = $8,
           next_check_at = NULL,
           lease_until = NULL,
           updated_at = now()
      FROM locked l
     WHERE p.id = l.id
    RETURNING p.id
), events AS (
    INSERT INTO outbox (event_id, event_type, payload, occurred_at)
    SELECT e.id, e.type, jsonb_set(e.body, '{data,seq}', to_jsonb(nextval('event_seq'))),
           (e.body ->> 'occurred_at')::timestamptz
      FROM paid,
           (SELECT * FROM unnest($11::uuid[], $12::text[], $13::jsonb[]) WITH ORDINALITY
                AS u(id, type, body, n) ORDER BY n) e
    RETURNING 1
)
SELECT (SELECT count(*) FROM paid) AS paid, (SELECT count(*) FROM events) AS events
