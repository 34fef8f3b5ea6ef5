-- unusual daily spend per provider and per provider × model (the request rows' model), as
-- billed (by charge date, like spend_by_provider; restatement rows only at provider level).
-- Each day is compared with the days that had spend among the 28 days before it:
--   baseline_median_nanos = the median of those days' spend, baseline_mad_nanos = their
--   median absolute deviation, scale = the larger of 1.4826 × MAD (one standard
--   deviation for normal data), 5% of the median and one cent;
--   score = (day's spend − median) / scale.
-- A day is listed when its spend is at least $0.01 and
--   rule 'baseline':     5 or more earlier days had spend and score >= 4 (a spike), or
--   rule 'day_over_day': fewer than 5 earlier days had spend, and the day is at least 3
--                        times the day before (when it had spend) or 3 times the median
--                        of the earlier days with spend.
create or replace view spend_anomalies as
with daily as (
    select
        'provider' as level,
        provider,
        '*' as model,
        (charged_at at time zone 'UTC')::date as day,
        sum(cost_nanos) as cost_nanos
    from int_model_charges
    group by all
    union all
    select
        'model' as level,
        provider,
        model,
        (charged_at at time zone 'UTC')::date as day,
        sum(cost_nanos) as cost_nanos
    from int_model_charges
    where attribution <> 'restatement'
    group by all
),

series_bounds as (
    select level, provider, model, min(day) as first_day
    from daily
    group by all
),

last_day as (
    select max(day) as day from daily
),

series as (
    -- every day from a series' first spend to the last day in the data; no spend is 0
    select
        c.level,
        c.provider,
        c.model,
        c.day,
        coalesce(d.cost_nanos, 0)::double as cost_nanos
    from (
        select
            s.level,
            s.provider,
            s.model,
            unnest(generate_series(s.first_day, l.day, interval 1 day))::date as day
        from series_bounds as s
        cross join last_day as l
    ) as c
    left join daily as d
        on d.level = c.level
        and d.provider is not distinct from c.provider
        and d.model is not distinct from c.model
        and d.day = c.day
),

scored as (
    -- the baseline: the days with spend among the 28 before (a framed window)
    select
        *,
        lag(cost_nanos) over by_day as previous_day_nanos,
        count(*) filter (where cost_nanos > 0) over baseline as baseline_days,
        median(cost_nanos) filter (where cost_nanos > 0) over baseline
            as baseline_median_nanos,
        mad(cost_nanos) filter (where cost_nanos > 0) over baseline as baseline_mad_nanos
    from series
    window
        by_day as (partition by level, provider, model order by day),
        baseline as (
            partition by level, provider, model order by day
            range between interval 28 days preceding and interval 1 day preceding
        )
),

scaled as (
    select
        *,
        greatest(
            1.4826 * coalesce(baseline_mad_nanos, 0),
            0.05 * coalesce(baseline_median_nanos, 0),
            10000000
        ) as scale_nanos
    from scored
),

flagged as (
    select
        *,
        (cost_nanos - coalesce(baseline_median_nanos, 0)) / scale_nanos as score,
        case
            when baseline_days >= 5
                and (cost_nanos - baseline_median_nanos) / scale_nanos >= 4 then 'baseline'
            when baseline_days < 5
                and (
                    (previous_day_nanos > 0 and cost_nanos >= 3 * previous_day_nanos)
                    or (baseline_days > 0 and cost_nanos >= 3 * baseline_median_nanos)
                ) then 'day_over_day'
        end as rule
    from scaled
    where cost_nanos >= 10000000
)

select
    day,
    level,
    provider,
    model,
    cost_nanos::hugeint as cost_nanos,
    nanos_to_usd(cost_nanos::hugeint) as cost_usd,
    round(baseline_median_nanos)::hugeint as baseline_median_nanos,
    round(baseline_mad_nanos)::hugeint as baseline_mad_nanos,
    baseline_days,
    previous_day_nanos::hugeint as previous_day_nanos,
    round(score, 2) as score,
    rule,
    case
        when rule = 'baseline' then
            'spend ' || usd_cents_text(cost_nanos) || ' vs a median of '
            || usd_cents_text(round(baseline_median_nanos))
            || ' on the ' || baseline_days || ' days with spend before (score '
            || round(score, 1)::varchar || ')'
        when previous_day_nanos > 0 and cost_nanos >= 3 * previous_day_nanos then
            'spend ' || usd_cents_text(cost_nanos) || ' is '
            || round(cost_nanos / previous_day_nanos, 1)::varchar || 'x the day before'
        else
            'spend ' || usd_cents_text(cost_nanos) || ' is '
            || round(cost_nanos / baseline_median_nanos, 1)::varchar
            || 'x the median of the ' || baseline_days || ' earlier days with spend'
    end as explanation
from flagged
where rule is not null
