-- What settling a payment without locks decides on, in one statement: the payment,
-- its subscription (a renewal's), whether its user has a live subscription, its
-- tariff's period, the saved method it names, and the database's clock. Nothing is
-- locked: the statement that settles re-checks on the latest rows what was decided
-- here (payments/settle_*.sql).
SELECT {p.cols}, now() AS db_now,
       t.period_count AS tariff_period_count, t.period_unit AS tariff_period_unit,
       m.provider_method_id AS method_provider_id, m.title AS method_title,
       EXISTS (SELECT 1 FROM subscriptions l
                WHERE l.user_id = p.user_id AND l.status IN ('active', 'past_due')) AS user_has_live,
       {s.cols}
  FROM payments p
  JOIN tariffs t ON t.id = p.tariff_id
  LEFT JOIN payment_methods m ON m.id = p.payment_method_id
  LEFT JOIN subscriptions s ON s.id = p.subscription_id
 WHERE {where}
