SELECT count(*) FROM payments WHERE status = 'succeeded'
