-- Issue 12 (seed 297): a CloudPayments purchase is an order, a payment page the
-- viewer may still pay days later. Its id is kept so the order can be voided at
-- CloudPayments (`orders/cancel`) before we give the purchase up; otherwise money
-- could arrive for a payment we have marked failed.
ALTER TABLE payments ADD COLUMN provider_checkout_id text;
