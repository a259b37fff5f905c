INSERT INTO outbox (event_id, event_type, payload, occurred_at)
VALUES ($1, $2,
        jsonb_set($3::jsonb, '{data,seq}', to_jsonb(nextval('event_seq'))),
        ($3::jsonb ->> 'occurred_at')::timestamptz)
