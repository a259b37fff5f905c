-- The simulator's clock: moving every timestamp of every table back by an interval
-- is the same as moving the clock forward, since the service decides by now().
CREATE OR REPLACE FUNCTION sim_warp(back interval) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT table_name,
               string_agg(format('%I = %I - $1', column_name, column_name), ', ') AS sets
        FROM information_schema.columns
        WHERE table_schema = 'public' AND data_type = 'timestamp with time zone'
        GROUP BY table_name
    LOOP
        EXECUTE format('UPDATE %I SET %s', t.table_name, t.sets) USING back;
    END LOOP;
END $$;
