-- Issue 12 (seed 1831): a refusal of a re-sent create says nothing about the first
-- send of the same key, whose answer was lost and which may have charged. Each
-- send is counted so a refusal of a re-send is checked by a look-up before the
-- payment is failed. Rows already waiting for an answer may have been sent.
ALTER TABLE payments ADD COLUMN create_sends int NOT NULL DEFAULT 0;
UPDATE payments SET create_sends = 1 WHERE status = 'pending' AND provider_payment_id IS NULL;
