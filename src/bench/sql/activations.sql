-- What the scenarios that activate purchases check: every payment succeeded once,
-- one live subscription each, both events of each in the outbox, none twice.
SELECT (SELECT count(*) FROM payments WHERE status = 'succeeded') AS succeeded,
       (SELECT count(*) FROM subscriptions WHERE status = 'active') AS active,
       (SELECT count(DISTINCT subscription_id) FROM payments WHERE status = 'succeeded') AS linked,
       (SELECT count(*) FROM outbox) AS outbox,
       (SELECT count(*) FROM (SELECT payload->'data'->>'payment_id' FROM outbox
                               WHERE event_type = 'payment.succeeded' GROUP BY 1 HAVING count(*) <> 1) d)
           AS dup_events,
       (SELECT count(*) FROM outbox WHERE event_type = 'subscription.activated') AS activated
