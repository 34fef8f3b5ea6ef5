-- each catalogue price entry with the time it was in force: from the snapshot that first
-- showed it (valid_from) to the first later snapshot that no longer shows it (valid_to,
-- exclusive; null while the latest snapshot still shows it). An entry is its provider,
-- model, endpoint, meter, unit size, price and conditions: one that leaves and comes back
-- has one row per stay. The catalogue carries no service tier: a batch and a standard
-- price of one meter are two entries.
create or replace view int_catalogue_validity as
with entries as (
    select
        provider, model, endpoint, meter, unit_size, unit_price, conditions, snapshot_n,
        any_value(display_name) as display_name,
        any_value(unit) as unit,
        any_value(price_per_unit) as price_per_unit,
        any_value(unit_price_attousd) as unit_price_attousd,
        any_value(taken_at) as taken_at,
        any_value(next_taken_at) as next_taken_at
    from stg_catalogue_prices
    group by provider, model, endpoint, meter, unit_size, unit_price, conditions, snapshot_n
),

stays as (
    select
        *,
        snapshot_n - row_number() over (
            partition by provider, model, endpoint, meter, unit_size, unit_price, conditions
            order by snapshot_n
        ) as stay
    from entries
)

select
    provider,
    model,
    endpoint,
    any_value(display_name) as display_name,
    meter,
    any_value(unit) as unit,
    unit_size,
    any_value(price_per_unit) as price_per_unit,
    unit_price,
    any_value(unit_price_attousd) as unit_price_attousd,
    conditions,
    min(taken_at) as valid_from,
    arg_max_null(next_taken_at, snapshot_n) as valid_to
from stays
group by provider, model, endpoint, meter, unit_size, unit_price, conditions, stay
