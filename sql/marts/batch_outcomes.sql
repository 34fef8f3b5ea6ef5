-- status mix, lifecycle durations and billed spend (current bills) per UTC creation day,
-- provider and status.
create or replace view batch_outcomes as
with batches as (
    select
        (created_at at time zone 'UTC')::date as day,
        provider,
        status,
        is_terminal,
        request_counts_total,
        request_counts_completed,
        request_counts_failed,
        billed_nanos as cost_nanos,
        epoch(coalesce(completed_at, failed_at, expired_at, cancelled_at) - created_at)
            as lifecycle_s,
        epoch(coalesce(in_progress_at, finalizing_at) - created_at) as queued_s
    from stg_batches
)

select
    day,
    provider,
    status,
    count(*) as batches,
    sum(request_counts_total)::hugeint as requests_total,
    sum(request_counts_completed)::hugeint as requests_completed,
    sum(request_counts_failed)::hugeint as requests_failed,
    round(median(queued_s), 3) as median_queued_s,
    round(median(lifecycle_s), 3) as median_lifecycle_s,
    round(max(lifecycle_s), 3) as max_lifecycle_s,
    coalesce(sum(cost_nanos), 0)::hugeint as cost_nanos,
    nanos_to_usd(coalesce(sum(cost_nanos), 0)) as cost_usd,
    status in ('failed', 'expired', 'cancelled') as is_unsuccessful
from batches
group by day, provider, status
order by day, provider, status
