SELECT {cols} FROM payments
WHERE subscription_id = $1 AND kind = 'renewal' AND period_start = $2
  AND status IN ('pending', 'waiting_for_capture', 'succeeded')
