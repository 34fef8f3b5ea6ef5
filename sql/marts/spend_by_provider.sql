-- spend per UTC day and provider, with week and month for roll-ups.
-- batches: every batch charged that day; billed_batches: those with a cost.
create or replace view spend_by_provider as
with charged as (
    select
        (charged_at at time zone 'UTC')::date as day,
        provider,
        cost_nanos
    from stg_batches
),

daily as (
    select
        day,
        provider,
        count(*) as batches,
        count(cost_nanos) as billed_batches,
        coalesce(sum(cost_nanos), 0)::hugeint as cost_nanos
    from charged
    group by day, provider
)

select
    day,
    date_trunc('week', day)::date as week,
    date_trunc('month', day)::date as month,
    provider,
    batches,
    billed_batches,
    cost_nanos,
    nanos_to_usd(cost_nanos) as cost_usd
from daily
order by day, provider
