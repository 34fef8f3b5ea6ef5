-- money the gateway priced but did NOT bill (billing.billed = false with a cost), per UTC
-- charge day, provider and reason: not spend (no view, budget or FOCUS row counts it),
-- listed here so nothing disappears. reason_base / reason_detail split billing.reason at
-- its first ':' (e.g. settlement_not_applied / reservation_exceeded).
create or replace view spend_unbilled as
with unbilled as (
    select
        (charged_at at time zone 'UTC')::date as day,
        provider,
        coalesce(billing_reason_base, '(no reason)') as reason_base,
        billing_reason_detail as reason_detail,
        is_final,
        unbilled_nanos
    from stg_batches
    where unbilled_nanos is not null
)

select
    day,
    date_trunc('month', day)::date as month,
    provider,
    reason_base,
    reason_detail,
    count(*) as batches,
    count(*) filter (where is_final) as final_batches,
    sum(unbilled_nanos)::hugeint as cost_nanos,
    nanos_to_usd(sum(unbilled_nanos)) as cost_usd
from unbilled
group by all
order by day, provider, reason_base, reason_detail
