-- spend per UTC day of USE and provider: each batch's current (final) bill on the day its
-- processing ended (stg_batches.used_at), restatements included in place. The other
-- reading of the same money: spend_by_provider and the report date it as billed (charge
-- date, corrections where restated). Both sum to the same total over all time.
create or replace view spend_as_used as
with used as (
    select
        (used_at at time zone 'UTC')::date as day,
        provider,
        batch_id,
        billed_nanos
    from stg_batches
    where is_billed
)

select
    day,
    date_trunc('month', day)::date as month,
    provider,
    count(*) as batches,
    sum(billed_nanos)::hugeint as cost_nanos,
    nanos_to_usd(sum(billed_nanos)) as cost_usd
from used
group by day, provider
order by day, provider
