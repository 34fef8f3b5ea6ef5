-- every restated bill: the difference booked when the gateway's amount changed after the
-- first charge, per batch and restatement. The original charge stays in its period
-- (original_day); the difference is spend of restated_day (the "as billed" reading).
create or replace view spend_restatements as
with corrections as (
    select
        batch_id,
        provider,
        charged_at as restated_at,
        sum(charge_nanos) as delta_nanos
    from int_billed_charges
    where booking = 'correction'
    group by batch_id, provider, charged_at
),

originals as (
    select
        batch_id,
        min(charged_at) as original_at,
        min(used_at) as used_at,
        sum(charge_nanos) as original_nanos
    from int_billed_charges
    where booking = 'charge'
    group by batch_id
)

select
    c.batch_id,
    c.provider,
    (o.used_at at time zone 'UTC')::date as used_day,
    (o.original_at at time zone 'UTC')::date as original_day,
    (c.restated_at at time zone 'UTC')::date as restated_day,
    coalesce(o.original_nanos, 0)::hugeint as original_nanos,
    c.delta_nanos::hugeint as delta_nanos,
    nanos_to_usd(c.delta_nanos) as delta_usd,
    b.billed_nanos::hugeint as current_nanos
from corrections as c
left join originals as o on o.batch_id = c.batch_id
left join stg_batches as b on b.batch_id = c.batch_id
order by restated_day, batch_id
