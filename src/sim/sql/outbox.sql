-- The outbox in publication order, with each event's subscription and seq.
-- `period_end`: the event's current_period_end moved back by every warp since it
-- occurred (the column occurred_at is warped, the payload is not), so it compares
-- with subscriptions.current_period_end now.
SELECT event_id::text AS event_id, event_type, sent_at IS NOT NULL AS sent,
       payload -> 'data' ->> 'subscription_id' AS subscription_id,
       (payload -> 'data' ->> 'seq')::bigint AS seq,
       to_char(((payload -> 'data' ->> 'current_period_end')::timestamptz
                - ((payload ->> 'occurred_at')::timestamptz - occurred_at)) AT TIME ZONE 'UTC',
               'YYYY-MM-DD"T"HH24:MI:SS') AS period_end
FROM outbox
ORDER BY id
