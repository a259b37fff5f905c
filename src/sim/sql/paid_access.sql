-- Payments that paid for a period not over yet and were not fully refunded, with
-- their subscription's state: each subscription must be live, and last at least
-- until the payment's period ends. A period given back in full while in use or
-- ahead (rule 12) moves every later period back by its length: those later
-- payments are owed access only until their period end minus what was given back
-- before them (give or take the days months differ by).
WITH given_back AS (
    SELECT r.subscription_id, r.period_start, r.period_end - r.period_start AS length
    FROM payments r
    WHERE r.status = 'refunded'
      AND r.period_start IS NOT NULL AND r.period_end IS NOT NULL
      AND (SELECT min(f.created_at) FROM refunds f
           WHERE f.payment_id = r.id AND f.status = 'succeeded') < r.period_end
), owed AS (
    SELECT p.id, p.subscription_id,
           p.period_end - coalesce(sum(g.length), interval '0') AS until,
           count(g.length) > 0 AS shifted
    FROM payments p
    LEFT JOIN given_back g
           ON g.subscription_id = p.subscription_id AND g.period_start < p.period_start
    WHERE p.status IN ('succeeded', 'partially_refunded') AND p.period_end IS NOT NULL
    GROUP BY p.id, p.subscription_id, p.period_end
), slack AS (
    SELECT o.*, CASE WHEN o.shifted THEN interval '3 days' ELSE interval '1 second' END AS days
    FROM owed o
)
SELECT o.id::text AS payment_id, s.id::text AS subscription_id, s.status,
       s.current_period_end >= o.until - o.days AS covered
FROM slack o
JOIN subscriptions s ON s.id = o.subscription_id
WHERE o.until > now() + interval '1 minute' + o.days
