-- spend per UTC day and provider, as billed: by charge date (a restatement's difference on
-- the day it was restated; spend_as_used has final amounts by usage day), with week and
-- month for roll-ups. batches: batches with a charge that day; corrections: restated
-- batches whose difference was booked that day.
create or replace view spend_by_provider as
with charged as (
    select
        (charged_at at time zone 'UTC')::date as day,
        provider,
        batch_id,
        booking,
        charge_nanos
    from int_billed_charges
),

daily as (
    select
        day,
        provider,
        count(distinct batch_id) filter (where booking = 'charge') as batches,
        count(distinct batch_id) filter (where booking = 'correction') as corrections,
        coalesce(sum(charge_nanos), 0)::hugeint as cost_nanos
    from charged
    group by day, provider
)

select
    day,
    date_trunc('week', day)::date as week,
    date_trunc('month', day)::date as month,
    provider,
    batches,
    batches as billed_batches,
    corrections,
    cost_nanos,
    nanos_to_usd(cost_nanos) as cost_usd
from daily
order by day, provider
