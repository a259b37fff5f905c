SELECT gen_random_uuid() FROM generate_series(1, $1::int)
