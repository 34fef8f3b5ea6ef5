-- billed spend by what it bought, per UTC month of the charge date and provider. The
-- gateway bills only successful responses, so a batch that failed or expired part-way
-- still delivered what it billed: that is not waste.
--   waste_nanos = spend that bought nothing:
--     error_response_nanos:  billed cost of request rows that failed (status not
--                            'completed' or HTTP status 400 or more), in any batch;
--     cancelled_batch_nanos: the rest of the bill of batches that were cancelled
--                            (spend the user stopped);
--   ended_badly_nanos = spend on batches that failed or expired but delivered outputs
--     (failed_batch_nanos + expired_batch_nanos, error responses excluded): not waste.
-- Current bills (billed money only), at the batch's charge date.
create or replace view spend_waste as
with batches as (
    select
        batch_id,
        provider,
        coalesce(lifecycle_status, status) as status,
        date_trunc('month', charged_at at time zone 'UTC')::date as month,
        billed_nanos as cost_nanos
    from stg_batches
    where is_billed
),

error_responses as (
    select
        r.batch_id,
        sum(coalesce(r.cost_nanos, 0)) as cost_nanos,
        count(*) as requests
    from stg_batch_requests as r
    where r.request_status <> 'completed' or r.response_status >= 400
    group by r.batch_id
),

parts as (
    select
        b.month,
        b.provider,
        b.status,
        b.cost_nanos,
        coalesce(e.cost_nanos, 0) as error_nanos,
        coalesce(e.requests, 0) as error_requests,
        b.cost_nanos - coalesce(e.cost_nanos, 0) as rest_nanos
    from batches as b
    left join error_responses as e on e.batch_id = b.batch_id
),

sums as (
    select
        month,
        provider,
        sum(cost_nanos)::hugeint as billed_nanos,
        sum(error_nanos)::hugeint as error_response_nanos,
        sum(error_requests)::bigint as failed_requests,
        coalesce(sum(rest_nanos) filter (where status = 'cancelled'), 0)::hugeint
            as cancelled_batch_nanos,
        coalesce(sum(rest_nanos) filter (where status = 'failed'), 0)::hugeint
            as failed_batch_nanos,
        coalesce(sum(rest_nanos) filter (where status = 'expired'), 0)::hugeint
            as expired_batch_nanos
    from parts
    group by month, provider
)

select
    month,
    provider,
    billed_nanos,
    error_response_nanos,
    failed_requests,
    cancelled_batch_nanos,
    (error_response_nanos + cancelled_batch_nanos)::hugeint as waste_nanos,
    nanos_to_usd(error_response_nanos + cancelled_batch_nanos) as waste_usd,
    failed_batch_nanos,
    expired_batch_nanos,
    (failed_batch_nanos + expired_batch_nanos)::hugeint as ended_badly_nanos
from sums
