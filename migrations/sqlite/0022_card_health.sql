-- The daily card check looks for cards expiring soon, by the month they expire in.
CREATE INDEX payment_methods_by_expiry ON payment_methods ((exp_year * 12 + exp_month));
