-- The console's indexes over tables that already hold rows, apart from V13 so
-- that V13's brief ALTER TABLE lock is not held while they are built. Each build
-- blocks writes to its table for its duration (reads go on): on a large
-- installation, create them by hand first with CREATE INDEX CONCURRENTLY under
-- these names (IF NOT EXISTS then skips them here).

-- Payments waiting for a person (the overview's count, the review page).
CREATE INDEX IF NOT EXISTS payments_needs_review ON payments (created_at)
    WHERE review_reason IS NOT NULL AND reviewed_at IS NULL;
-- Revenue by capture date.
CREATE INDEX IF NOT EXISTS payments_captured ON payments (captured_at)
    WHERE captured_at IS NOT NULL;
-- Failed notifications (the overview's count, the inbox filter).
CREATE INDEX IF NOT EXISTS webhook_inbox_failed ON webhook_inbox (received_at)
    WHERE status = 'failed';
-- A viewer's timeline: their events, from the outbox.
CREATE INDEX IF NOT EXISTS outbox_user ON outbox ((payload -> 'data' ->> 'user_id'), id);
