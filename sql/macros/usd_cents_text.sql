-- money for people: integer nano-USD as dollars to the cent, rounded half up, as text
-- ('$1,234.57', '-$0.01'). Prose only (explanations); tables keep the exact cost_usd.
create or replace macro usd_cents_text(nanos) as
    (case when nanos < 0 and (abs(nanos::hugeint) + 5000000) // 10000000 > 0 then '-$' else '$' end)
    || format('{:,}', (abs(nanos::hugeint) + 5000000) // 1000000000)
    || '.'
    || lpad((((abs(nanos::hugeint) + 5000000) // 10000000) % 100)::varchar, 2, '0')
