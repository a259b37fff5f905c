-- What the renew scenario checks: one renewal per subscription, each period extended,
-- both events of each in the outbox.
SELECT (SELECT count(*) FROM payments WHERE kind = 'renewal') AS renewals,
       (SELECT count(*) FROM subscriptions
         WHERE status = 'active' AND current_period_end > now() + interval '25 days') AS extended,
       (SELECT count(*) FROM outbox) AS outbox,
       (SELECT count(*) FROM outbox WHERE event_type = 'subscription.renewed') AS renewed_events,
       (SELECT count(*) FROM (SELECT subscription_id FROM payments WHERE kind = 'renewal'
                               GROUP BY 1 HAVING count(*) > 1) d) AS twice
