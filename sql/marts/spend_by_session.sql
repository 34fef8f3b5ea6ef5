-- billed spend per session and provider over all time (current bills, restatements
-- included), ranked by cost (rank 1 = the most expensive session). billed_batches: those
-- the gateway billed (money priced but not billed is not spend: spend_unbilled).
create or replace view spend_by_session as
with sessions as (
    select
        session_id,
        provider,
        count(*) as batches,
        count(billed_nanos) as billed_batches,
        coalesce(sum(billed_nanos), 0)::hugeint as cost_nanos,
        min(created_at) as first_activity_at,
        max(greatest(last_event_at, billing_finalized_at)) as last_activity_at
    from stg_batches
    group by session_id, provider
)

select
    session_id,
    provider,
    batches,
    billed_batches,
    cost_nanos,
    nanos_to_usd(cost_nanos) as cost_usd,
    first_activity_at,
    last_activity_at,
    rank() over (order by cost_nanos desc) as cost_rank
from sessions
order by cost_nanos desc, session_id, provider
