SELECT pay_system, provider_method_id FROM payment_methods WHERE usable
