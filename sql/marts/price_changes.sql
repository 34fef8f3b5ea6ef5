-- what changed in the gateway's price catalogue from one snapshot to the next: per
-- provider, model, endpoint, meter, unit size and conditions, 'added' (a price the
-- earlier snapshot did not have), 'removed', or 'changed' (exactly one price left and
-- one came: old and new price side by side). The catalogue has no tier label, so a meter
-- with a batch and a standard price that both move shows as added and removed rows.
create or replace view price_changes as
with snapshots as (
    select
        row_number() over (order by taken_at, snapshot_id) as snapshot_n,
        taken_at
    from catalogue_snapshots
),

pairs as (
    select
        snapshot_n as new_n,
        taken_at as changed_at,
        lag(snapshot_n) over (order by snapshot_n) as old_n,
        lag(taken_at) over (order by snapshot_n) as previous_at
    from snapshots
),

entries as (
    select distinct
        snapshot_n, provider, model, endpoint, meter, unit_size, conditions, unit_price,
        price_per_unit
    from stg_catalogue_prices
),

old_side as (
    select p.changed_at, p.previous_at, e.*
    from pairs as p
    inner join entries as e on e.snapshot_n = p.old_n
),

new_side as (
    select p.changed_at, p.previous_at, e.*
    from pairs as p
    inner join entries as e on e.snapshot_n = p.new_n
    where p.old_n is not null
),

moves as (
    select
        coalesce(n.changed_at, o.changed_at) as changed_at,
        coalesce(n.previous_at, o.previous_at) as previous_at,
        coalesce(n.provider, o.provider) as provider,
        coalesce(n.model, o.model) as model,
        coalesce(n.endpoint, o.endpoint) as endpoint,
        coalesce(n.meter, o.meter) as meter,
        coalesce(n.unit_size, o.unit_size) as unit_size,
        coalesce(n.conditions, o.conditions) as conditions,
        o.price_per_unit as old_price_per_unit,
        n.price_per_unit as new_price_per_unit
    from new_side as n
    full outer join old_side as o
        on o.changed_at = n.changed_at
        and o.provider is not distinct from n.provider
        and o.model is not distinct from n.model
        and o.endpoint is not distinct from n.endpoint
        and o.meter is not distinct from n.meter
        and o.unit_size is not distinct from n.unit_size
        and o.conditions is not distinct from n.conditions
        and o.unit_price is not distinct from n.unit_price
    where n.provider is null or o.provider is null
),

keyed as (
    select
        *,
        count(old_price_per_unit) over w as removed,
        count(new_price_per_unit) over w as added
    from moves
    window w as (
        partition by changed_at, provider, model, endpoint, meter, unit_size, conditions
    )
)

select
    changed_at, previous_at, provider, model, endpoint, meter, unit_size, conditions,
    'changed' as change,
    max(old_price_per_unit) as old_price_per_unit,
    max(new_price_per_unit) as new_price_per_unit
from keyed
where removed = 1 and added = 1
group by changed_at, previous_at, provider, model, endpoint, meter, unit_size, conditions
union all
select
    changed_at, previous_at, provider, model, endpoint, meter, unit_size, conditions,
    case when new_price_per_unit is null then 'removed' else 'added' end as change,
    old_price_per_unit,
    new_price_per_unit
from keyed
where not (removed = 1 and added = 1)
