SELECT count(*) FROM payments WHERE kind = 'renewal' AND status = 'succeeded'
