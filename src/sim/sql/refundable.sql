SELECT id::text AS id, amount_minor - refunded_minor AS left_minor, amount_minor
FROM payments WHERE status IN ('succeeded', 'partially_refunded') ORDER BY created_at, id
