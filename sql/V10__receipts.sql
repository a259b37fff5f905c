-- 54-FZ receipts. The VAT code and tax system are the tariff's (YooKassa's
-- numbering; each adapter maps them). A payment and a refund keep the receipt
-- that was sent for them (re-sends send the same); a subscription keeps the
-- receipt of the purchase that started or last extended it, the template of its
-- renewals' receipts (customer and line; VAT and tax system are re-read from the
-- tariff at each renewal).
ALTER TABLE tariffs
    ADD COLUMN vat_code smallint NOT NULL DEFAULT 1 CHECK (vat_code BETWEEN 1 AND 12),
    ADD COLUMN tax_system_code smallint CHECK (tax_system_code BETWEEN 1 AND 6);
ALTER TABLE payments ADD COLUMN receipt jsonb;
ALTER TABLE subscriptions ADD COLUMN receipt jsonb;
ALTER TABLE refunds ADD COLUMN receipt jsonb;
