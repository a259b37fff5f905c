-- The operator's console (issue 16).

-- Every console action: who did what to which object, with the object before and
-- after. Written after the action's own transaction, by the same request.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    operator_id uuid NOT NULL,
    action      text NOT NULL,
    -- What was acted on, as `<kind>:<id>` (`payment:…`, `user:…`, `tariff:…`, `webhook:…`).
    target      text NOT NULL,
    before      jsonb,
    after       jsonb,
    -- `ok`, or the error code the action was refused with.
    outcome     text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_target ON audit_log (target, id);

-- Alerts, as logged (`billing_alerts_total{kind}`), kept for the console's overview.
CREATE TABLE alerts (
    id         bigserial PRIMARY KEY,
    kind       text NOT NULL,
    message    text NOT NULL,
    -- `payment:…`, `subscription:…` or `webhook:…`.
    subject    text NOT NULL,
    raised_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alerts_recent ON alerts (raised_at);

-- A payment flagged for review stays flagged (`review_reason`); a person who looked
-- at it says so here, and it leaves the review list.
-- Nullable, no default: no table rewrite, the lock is held for an instant (the
-- indexes over existing tables are built by V14, in a transaction of their own).
ALTER TABLE payments
    ADD COLUMN reviewed_at timestamptz,
    ADD COLUMN reviewed_by uuid,
    ADD COLUMN review_note text;

-- Every processing of a stored notification, as it ended: the inbox row keeps only
-- the last outcome; the console shows the history. Written by the statement that
-- records the outcome (no extra round trip).
CREATE TABLE webhook_attempts (
    inbox_id  uuid NOT NULL REFERENCES webhook_inbox (id),
    -- The row's `attempts` after this one: 1, 2, …
    attempt   int NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    -- The row's status after it (`received` again means it will be retried).
    status    text NOT NULL,
    outcome   text,
    error     text,
    PRIMARY KEY (inbox_id, attempt)
);
CREATE INDEX webhook_attempts_at ON webhook_attempts (at);
