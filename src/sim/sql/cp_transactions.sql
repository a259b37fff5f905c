SELECT id::text AS id, provider_payment_id FROM payments
WHERE pay_system = 'cloudpayments' AND provider_payment_id IS NOT NULL
  AND status IN ('succeeded', 'partially_refunded') ORDER BY created_at, id
