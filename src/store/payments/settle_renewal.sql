-- A pending renewal paid for the period that starts where its live subscription's
-- current one ends: the common case of `settle` for renewals, whole, in one
-- statement. `locked` takes the payment's row, then the subscription's (the house
-- order), and re-checks on the latest versions what the caller decided on; with 0
-- rows nothing else happens and the caller takes the locked path.
--   $1 payment, $2 the period start (= the subscription's current end), $3 the new
--   end, $4 auto_renew as read, $5 captured_at, $6 the provider's id (recorded if
--   ours has none: a create's answer), $7 next_charge_at, $8/$9/$10 the events.
-- Both rows are locked by their primary keys, each in a CTE of its own (written
-- as one WHERE, the planner walks a partial index such as payments_open for one
-- id), and the decision checked on the versions locked.
WITH pay AS (
    SELECT id, subscription_id, kind, status, review_reason, period_start
      FROM payments WHERE id = $1 FOR UPDATE
), sub AS (
    SELECT id, current_period_end, status, auto_renew
      FROM subscriptions WHERE id = (SELECT subscription_id FROM pay) FOR UPDATE
), locked AS (
    SELECT pay.id AS payment_id, sub.id AS subscription_id
      FROM pay JOIN sub ON sub.id = pay.subscription_id
     WHERE pay.kind = 'renewal' AND pay.status = 'pending' AND pay.review_reason IS NULL
       AND pay.period_start = $2 AND sub.current_period_end = $2
       AND sub.status IN ('active', 'past_due') AND sub.auto_renew = $4
), paid AS (
    UPDATE payments p
       SET status = 'succeeded',
           captured_at = COALESCE($5, p.captured_at),
           provider_payment_id = COALESCE(p.provider_payment_id, NULLIF($6, '')),
           period_end = $3,
           next_check_at = NULL,
           lease_until = NULL,
           updated_at = now()
      FROM locked l
     WHERE p.id = l.payment_id
    RETURNING p.id
), renewed AS (
    UPDATE subscriptions s
       SET status = 'active',
           current_period_start = $2,
           current_period_end = $3,
           next_charge_at = $7,
           renewal_attempts = 0,
           past_due_since = NULL,
           ended_at = NULL,
           updated_at = now()
      FROM locked l
     WHERE s.id = l.subscription_id
    RETURNING s.id
), events AS (
    INSERT INTO outbox (event_id, event_type, payload, occurred_at)
    SELECT e.id, e.type, jsonb_set(e.body, '{data,seq}', to_jsonb(nextval('event_seq'))),
           (e.body ->> 'occurred_at')::timestamptz
      FROM paid, renewed,
           (SELECT * FROM unnest($8::uuid[], $9::text[], $10::jsonb[]) WITH ORDINALITY
                AS u(id, type, body, n) ORDER BY n) e
    RETURNING 1
)
SELECT (SELECT count(*) FROM paid) AS paid, (SELECT count(*) FROM events) AS events
