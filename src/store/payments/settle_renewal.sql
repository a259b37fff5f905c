-- A pending renewal paid for the period that starts where its live subscription's
-- current one ends: the common case of `settle` for renewals, whole, in one
-- statement. `locked` takes the payment's row, then the subscription's (the house
-- order), and re-checks on the latest versions what the caller decided on; with 0
-- rows nothing else happens and the caller takes the locked path.
--   $1 payment, $2 the period start (= the subscription's current end), $3 the new
--   end, $4 auto_renew as read, $5 captured_at, $6 the provider's id (recorded if
--   ours has none: a create's answer), $7 next_charge_at, $8/$9/$10 the events.
WITH locked AS (
    SELECT p.id AS payment_id, s.id AS subscription_id
      FROM payments p JOIN subscriptions s ON s.id = p.subscription_id
     WHERE p.id = $1 AND p.kind = 'renewal' AND p.status = 'pending' AND p.review_reason IS NULL
       AND p.period_start = $2 AND s.current_period_end = $2
       AND s.status IN ('active', 'past_due') AND s.auto_renew = $4
       FOR UPDATE OF p, s
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
