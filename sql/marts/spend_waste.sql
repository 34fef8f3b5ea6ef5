-- spend that bought nothing, per UTC month and provider: billed cost of batches that
-- failed, expired or were cancelled, and the cost of failed requests inside other batches
-- (request rows whose status is not 'completed' or whose HTTP status is 400 or more).
create or replace view spend_waste as
with batches as (
    select
        batch_id,
        provider,
        status,
        date_trunc('month', charged_at at time zone 'UTC')::date as month,
        coalesce(cost_nanos, 0) as cost_nanos
    from stg_batches
),

failed_requests as (
    select
        r.batch_id,
        sum(coalesce(r.cost_nanos, 0)) as cost_nanos,
        count(*) as requests
    from stg_batch_requests as r
    where r.request_status <> 'completed' or r.response_status >= 400
    group by r.batch_id
)

select
    b.month,
    b.provider,
    sum(b.cost_nanos)::hugeint as billed_nanos,
    coalesce(sum(b.cost_nanos) filter (where b.status = 'failed'), 0)::hugeint
        as failed_batch_nanos,
    coalesce(sum(b.cost_nanos) filter (where b.status = 'expired'), 0)::hugeint
        as expired_batch_nanos,
    coalesce(sum(b.cost_nanos) filter (where b.status = 'cancelled'), 0)::hugeint
        as cancelled_batch_nanos,
    coalesce(sum(f.cost_nanos) filter (
        where b.status not in ('failed', 'expired', 'cancelled')
    ), 0)::hugeint as failed_request_nanos,
    coalesce(sum(f.requests), 0)::bigint as failed_requests,
    (
        coalesce(sum(b.cost_nanos) filter (where b.status in ('failed', 'expired', 'cancelled')), 0)
        + coalesce(sum(f.cost_nanos) filter (
            where b.status not in ('failed', 'expired', 'cancelled')
        ), 0)
    )::hugeint as waste_nanos,
    nanos_to_usd(
        coalesce(sum(b.cost_nanos) filter (where b.status in ('failed', 'expired', 'cancelled')), 0)
        + coalesce(sum(f.cost_nanos) filter (
            where b.status not in ('failed', 'expired', 'cancelled')
        ), 0)
    ) as waste_usd
from batches as b
left join failed_requests as f on f.batch_id = b.batch_id
group by b.month, b.provider
