-- Payments that paid for a period not over yet and were not fully refunded, with
-- their subscription's state: each subscription must be live, and last at least as
-- long as the period paid (a fully refunded payment of the subscription gave a
-- period back, which moves the later periods: then only liveness is checked).
SELECT p.id::text AS payment_id, s.id::text AS subscription_id, s.status,
       s.current_period_end >= p.period_end - interval '1 second'
       OR EXISTS (SELECT 1 FROM payments r
                  WHERE r.subscription_id = s.id AND r.status = 'refunded') AS covered
FROM payments p
JOIN subscriptions s ON s.id = p.subscription_id
WHERE p.status IN ('succeeded', 'partially_refunded')
  AND p.period_end > now() + interval '1 minute'
