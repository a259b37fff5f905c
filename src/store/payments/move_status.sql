-- Moves a payment to the provider's status, forward only: the WHERE names the
-- statuses it may come from. Keeps what an earlier answer recorded (COALESCE).
UPDATE payments
   SET status = $2,
       captured_at = COALESCE($3, captured_at),
       cancellation_party = COALESCE($4, cancellation_party),
       cancellation_reason = COALESCE($5, cancellation_reason),
       payment_method_id = COALESCE(payment_method_id, $6),
       next_check_at = NULL,
       lease_until = NULL,
       updated_at = now()
 WHERE id = $1 AND status = ANY($7)
RETURNING {cols}
