-- the month-end figure of every month with spend, per provider and in all ('*'), as
-- billed (by charge date, like spend_by_provider and the report). A month before the
-- latest day in the data (as_of) shows its ACTUAL spend (is_estimate false). The month of
-- as_of shows an ESTIMATE, in parts:
--   run_rate_nanos_per_day = billed so far this month / days elapsed (1st to as_of);
--   projected_rest_nanos   = run rate × the days left after as_of;
--   running_estimate_nanos = what batches that can still be charged this month will add:
--     not final, running or pending, created this month (created_at, else first loaded)
--     and not past expires_at on as_of: (their cost so far / completed requests) ×
--     requests not yet done, or, before any cost, their requests × the provider's billed
--     cost per completed request this month;
--   stale_batches = non-final batches left out: created in an earlier month or past
--     expires_at (they cannot be charged this month as running work);
--   forecast_nanos = billed so far + projected rest + running estimate.
create or replace view spend_forecast as
with billed as (
    select
        provider,
        (charged_at at time zone 'UTC')::date as day,
        charge_nanos
    from int_billed_charges
),

as_of as (
    select max(day) as day, date_trunc('month', max(day))::date as month_start
    from billed
),

monthly as (
    select
        date_trunc('month', day)::date as month,
        provider,
        sum(charge_nanos)::hugeint as billed_nanos
    from billed
    group by all
),

month_prices as (
    -- the provider's billed cost per completed request in the month of as_of
    select
        b.provider,
        sum(b.billed_nanos)::double / nullif(sum(b.request_counts_completed), 0)
            as nanos_per_request
    from stg_batches as b
    cross join as_of as a
    where b.is_billed
      and (b.charged_at at time zone 'UTC')::date between a.month_start and a.day
    group by b.provider
),

open_batches as (
    select
        s.*,
        coalesce(s.created_at, s.loaded_at) < a.month_start::timestamptz
            or coalesce(s.expires_at < a.day::timestamptz, false) as is_stale
    from stg_batches as s
    cross join as_of as a
    where not s.is_final and s.lifecycle_group in ('running', 'pending')
),

running as (
    select
        o.provider,
        count(*) filter (where not o.is_stale) as running_batches,
        count(*) filter (where o.is_stale) as stale_batches,
        sum(
            case
                when coalesce(o.request_counts_completed, 0) > 0 and coalesce(o.cost_nanos, 0) > 0
                    then o.cost_nanos::double / o.request_counts_completed
                        * greatest(
                            coalesce(o.request_counts_total, 0)
                            - o.request_counts_completed
                            - coalesce(o.request_counts_failed, 0),
                            0
                        )
                else coalesce(o.request_counts_total, 0) * coalesce(p.nanos_per_request, 0)
            end
        ) filter (where not o.is_stale) as running_estimate_nanos
    from open_batches as o
    left join month_prices as p on p.provider is not distinct from o.provider
    group by o.provider
),

per_provider as (
    select
        coalesce(m.month, a.month_start) as month,
        coalesce(m.provider, r.provider) as provider,
        coalesce(m.billed_nanos, 0)::hugeint as billed_nanos,
        coalesce(r.running_batches, 0) as running_batches,
        coalesce(r.stale_batches, 0) as stale_batches,
        coalesce(try_cast(round(r.running_estimate_nanos) as hugeint), 0) as running_estimate_nanos
    from (select * from monthly where month = (select month_start from as_of)) as m
    full outer join running as r on r.provider is not distinct from m.provider
    cross join as_of as a
    where a.day is not null
    union all
    select
        m.month,
        m.provider,
        m.billed_nanos,
        0,
        0,
        0::hugeint
    from monthly as m
    cross join as_of as a
    where m.month < a.month_start
),

with_all as (
    select * from per_provider
    union all
    select
        month,
        '*' as provider,
        sum(billed_nanos)::hugeint,
        sum(running_batches)::bigint,
        sum(stale_batches)::bigint,
        sum(running_estimate_nanos)::hugeint
    from per_provider
    group by month
),

month_bounds as (
    select
        w.*,
        w.month = a.month_start as is_estimate,
        case when w.month = a.month_start then a.day
            else (w.month + interval 1 month)::date - 1 end as as_of,
        (w.month + interval 1 month)::date as month_end
    from with_all as w
    cross join as_of as a
),

projected as (
    select
        *,
        (as_of - month + 1) as days_elapsed,
        (month_end - as_of - 1) as days_left,
        round(billed_nanos / (as_of - month + 1))::hugeint as run_rate_nanos_per_day,
        case when is_estimate
            then round(billed_nanos / (as_of - month + 1) * (month_end - as_of - 1))::hugeint
            else 0::hugeint
        end as projected_rest_nanos
    from month_bounds
)

select
    month,
    as_of,
    provider,
    billed_nanos,
    days_elapsed,
    days_left,
    run_rate_nanos_per_day,
    projected_rest_nanos,
    running_batches,
    stale_batches,
    running_estimate_nanos,
    (billed_nanos + projected_rest_nanos + running_estimate_nanos)::hugeint as forecast_nanos,
    nanos_to_usd(billed_nanos + projected_rest_nanos + running_estimate_nanos) as forecast_usd,
    is_estimate
from projected
