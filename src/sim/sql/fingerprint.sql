-- Changes when anything the jobs do changes: the simulator waits until it stops.
SELECT concat_ws(' ',
    (SELECT count(*) FROM payments), (SELECT string_agg(status, ',' ORDER BY id) FROM payments),
    (SELECT string_agg(status || current_period_end::text, ',' ORDER BY id) FROM subscriptions),
    (SELECT string_agg(status, ',' ORDER BY id) FROM refunds),
    (SELECT count(*) FROM outbox), (SELECT count(*) FROM outbox WHERE sent_at IS NULL),
    (SELECT count(*) FROM webhook_inbox WHERE status = 'received'))
