-- an ESTIMATE of the month's end for the latest month in the data, per provider and in
-- all ('*'). As of the last charge date:
--   run_rate_nanos_per_day = billed so far this month / days elapsed (1st to as-of);
--   projected_rest_nanos   = run rate × the days left after as-of;
--   running_estimate_nanos = what batches still running will add: (their cost so far /
--     completed requests) × requests not yet done, or, before any cost, their requests ×
--     the provider's billed cost per completed request this month;
--   forecast_nanos = billed so far + projected rest + running estimate.
create or replace view spend_forecast as
with billed as (
    select
        provider,
        (charged_at at time zone 'UTC')::date as day,
        cost_nanos,
        request_counts_completed
    from stg_batches
    where cost_nanos is not null and is_final
),

as_of as (
    select max(day) as day, date_trunc('month', max(day))::date as month_start
    from billed
),

month_billed as (
    select
        b.provider,
        sum(b.cost_nanos)::hugeint as billed_nanos,
        sum(b.request_counts_completed) as completed_requests
    from billed as b
    cross join as_of as a
    where b.day between a.month_start and a.day
    group by b.provider
),

running as (
    select
        s.provider,
        count(*) as running_batches,
        sum(
            case
                when coalesce(s.request_counts_completed, 0) > 0 and coalesce(s.cost_nanos, 0) > 0
                    then s.cost_nanos::double / s.request_counts_completed
                        * greatest(
                            coalesce(s.request_counts_total, 0)
                            - s.request_counts_completed
                            - coalesce(s.request_counts_failed, 0),
                            0
                        )
                else coalesce(s.request_counts_total, 0)
                    * coalesce(m.billed_nanos::double / nullif(m.completed_requests, 0), 0)
            end
        ) as running_estimate_nanos
    from stg_batches as s
    left join month_billed as m on m.provider is not distinct from s.provider
    where not s.is_final and s.lifecycle_group in ('running', 'pending')
    group by s.provider
),

per_provider as (
    select
        coalesce(m.provider, r.provider) as provider,
        coalesce(m.billed_nanos, 0) as billed_nanos,
        coalesce(r.running_batches, 0) as running_batches,
        round(coalesce(r.running_estimate_nanos, 0))::hugeint as running_estimate_nanos
    from month_billed as m
    full outer join running as r on r.provider is not distinct from m.provider
),

with_all as (
    select * from per_provider
    union all
    select
        '*' as provider,
        sum(billed_nanos)::hugeint,
        sum(running_batches)::bigint,
        sum(running_estimate_nanos)::hugeint
    from per_provider
)

select
    a.month_start as month,
    a.day as as_of,
    w.provider,
    w.billed_nanos,
    (a.day - a.month_start + 1) as days_elapsed,
    ((a.month_start + interval 1 month)::date - a.day - 1) as days_left,
    round(w.billed_nanos / (a.day - a.month_start + 1))::hugeint as run_rate_nanos_per_day,
    round(
        w.billed_nanos / (a.day - a.month_start + 1)
        * ((a.month_start + interval 1 month)::date - a.day - 1)
    )::hugeint as projected_rest_nanos,
    w.running_batches,
    w.running_estimate_nanos,
    (
        w.billed_nanos
        + round(
            w.billed_nanos / (a.day - a.month_start + 1)
            * ((a.month_start + interval 1 month)::date - a.day - 1)
        )::hugeint
        + w.running_estimate_nanos
    )::hugeint as forecast_nanos,
    nanos_to_usd(
        w.billed_nanos
        + round(
            w.billed_nanos / (a.day - a.month_start + 1)
            * ((a.month_start + interval 1 month)::date - a.day - 1)
        )::hugeint
        + w.running_estimate_nanos
    ) as forecast_usd,
    true as is_estimate
from with_all as w
cross join as_of as a
where a.day is not null
