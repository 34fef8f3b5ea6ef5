-- each price entry of each catalogue snapshot (GET /v1/pricing/models, kept dated by
-- `billing prices` and API runs with --fetch-prices), with its snapshot's time and order.
-- unit_price is price_per_unit (a decimal string, per unit_size units) as a decimal; it
-- is null where the string was not a decimal (the entry is kept, never matched).
create or replace view stg_catalogue_prices as
with snapshots as (
    select
        snapshot_id,
        taken_at,
        row_number() over (order by taken_at, snapshot_id) as snapshot_n,
        lead(taken_at) over (order by taken_at, snapshot_id) as next_taken_at
    from catalogue_snapshots
)

select
    s.snapshot_id,
    s.snapshot_n,
    s.taken_at,
    s.next_taken_at,
    p.provider,
    p.model,
    p.endpoint,
    p.display_name,
    p.meter,
    p.unit,
    p.unit_size,
    p.price_per_unit,
    p.unit_price,
    p.unit_price_attousd,
    p.currency,
    p.conditions
from catalogue_prices as p
inner join snapshots as s on s.snapshot_id = p.snapshot_id
