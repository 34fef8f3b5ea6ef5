-- every budget of the config file against its spend, per period (UTC day or month) that
-- has spend, plus the latest period in the data. Spend is billed cost as billed (by charge
-- date; a restatement's difference in the period it was restated: int_model_charges);
-- a budget's filters (provider, model as the request rows report it, session, tag) must
-- all match. status: 'crossed' above the limit, 'warning' from 80% of it, else 'ok';
-- crossed_on / warning_since: the first day the period's spend so far was above the
-- limit / at 80% of it; overage_nanos: spend above the limit. thresholds: the
-- percentages a notification is sent at (billing.toml; default 80 and 100).
create or replace view budget_status as
with spend_budgets as (
    -- runway budgets (kind 'runway') are checked against the wallet: wallet_runway
    select * from budgets where coalesce(kind, 'spend') = 'spend'
),

facts as (
    select
        batch_id,
        provider,
        model,
        session_id,
        (charged_at at time zone 'UTC')::date as day,
        cost_nanos
    from int_model_charges
),

latest as (
    select max(day) as day from facts
),

periods as (
    select
        b.name,
        f.day,
        f.cost_nanos
    from spend_budgets as b
    inner join facts as f
        on (b.provider is null or f.provider = b.provider)
        and (b.model is null or f.model = b.model)
        and (b.session_id is null or f.session_id = b.session_id)
        and (
            b.tag_key is null
            or exists (
                select 1 from int_batch_tags as t
                where t.batch_id = f.batch_id
                  and t.tag_key = b.tag_key
                  and t.tag_value = b.tag_value
            )
        )
    union all
    select b.name, l.day, 0 as cost_nanos
    from spend_budgets as b
    cross join latest as l
    where l.day is not null
),

spend as (
    select
        b.name,
        b.period,
        case b.period
            when 'day' then p.day
            else date_trunc('month', p.day)::date
        end as period_start,
        p.day,
        b.limit_nanos,
        coalesce(b.thresholds, [80, 100]) as thresholds,
        concat_ws(
            ', ',
            'provider=' || b.provider,
            'model=' || b.model,
            'session=' || b.session_id,
            b.tag_key || '=' || b.tag_value
        ) as scope,
        p.cost_nanos
    from spend_budgets as b
    inner join periods as p on p.name = b.name
),

running as (
    -- each day's spend so far in its period: the first day above the limit dates a crossing
    select
        *,
        sum(cost_nanos) over (
            partition by name, period_start order by day
            rows between unbounded preceding and current row
        ) as spend_so_far_nanos
    from (
        select name, period, period_start, day, limit_nanos, thresholds, scope,
            sum(cost_nanos) as cost_nanos
        from spend
        group by all
    )
),

reached as (
    -- the first day the period's spend so far reached each notification threshold
    select
        r.name,
        r.period_start,
        t.pct,
        min(r.day) as reached_on
    from running as r
    cross join unnest(r.thresholds) as t (pct)
    where r.spend_so_far_nanos * 100 >= t.pct::hugeint * r.limit_nanos
    group by all
),

reached_lists as (
    select
        name,
        period_start,
        list({'pct': pct, 'since': reached_on} order by pct) as thresholds_reached
    from reached
    group by all
),

totals as (
    select
        name,
        period,
        period_start,
        scope,
        limit_nanos,
        thresholds,
        sum(cost_nanos)::hugeint as spend_nanos,
        min(day) filter (where spend_so_far_nanos > limit_nanos) as crossed_on,
        min(day) filter (where spend_so_far_nanos >= 0.8 * limit_nanos) as warned_on
    from running
    group by name, period, period_start, scope, limit_nanos, thresholds
)

select
    t.name as budget_name,
    period,
    t.period_start,
    case period
        when 'day' then t.period_start + interval 1 day
        else t.period_start + interval 1 month
    end::date as period_end,
    coalesce(nullif(scope, ''), 'all spend') as scope,
    limit_nanos,
    nanos_to_usd(limit_nanos) as limit_usd,
    spend_nanos,
    nanos_to_usd(spend_nanos) as spend_usd,
    (limit_nanos - spend_nanos)::hugeint as remaining_nanos,
    greatest(spend_nanos - limit_nanos, 0)::hugeint as overage_nanos,
    case when limit_nanos > 0
        then round(100.0 * spend_nanos / limit_nanos, 1)
    end as used_pct,
    case
        when spend_nanos > limit_nanos then 'crossed'
        when spend_nanos >= 0.8 * limit_nanos then 'warning'
        else 'ok'
    end as status,
    case when spend_nanos > limit_nanos then crossed_on end as crossed_on,
    case when spend_nanos >= 0.8 * limit_nanos then warned_on end as warning_since,
    t.thresholds,
    coalesce(r.thresholds_reached, []) as thresholds_reached
from totals as t
left join reached_lists as r on r.name = t.name and r.period_start = t.period_start
