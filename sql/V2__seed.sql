INSERT INTO pay_systems (alias, name, currencies, position) VALUES
    ('yookassa', 'YooKassa', ARRAY['RUB'], 1),
    ('cloudpayments', 'CloudPayments', ARRAY['RUB'], 2);

INSERT INTO tariffs (id, alias, name, description, price_minor, currency, period_count, period_unit) VALUES
    ('6a1f0c52-8d0e-4c1e-9a57-0a9f1d3b2c01', 'month', 'Monthly', 'Every film and series, one month', 29900, 'RUB', 1, 'month'),
    ('6a1f0c52-8d0e-4c1e-9a57-0a9f1d3b2c03', 'quarter', 'Three months', 'Every film and series, three months', 79900, 'RUB', 3, 'month'),
    ('6a1f0c52-8d0e-4c1e-9a57-0a9f1d3b2c12', 'year', 'Yearly', 'Every film and series, one year', 299000, 'RUB', 1, 'year');
