-- every budget of the config file against its spend, per period (UTC day or month) that
-- has spend, plus the latest period in the data. Spend is billed cost by charge date;
-- a budget's filters (provider, model as the request rows report it, session, tag) must
-- all match. status: 'crossed' above the limit, 'warning' from 80% of it, else 'ok'.
create or replace view budget_status as
with facts as (
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
    from budgets as b
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
    from budgets as b
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
        b.limit_nanos,
        concat_ws(
            ', ',
            'provider=' || b.provider,
            'model=' || b.model,
            'session=' || b.session_id,
            b.tag_key || '=' || b.tag_value
        ) as scope,
        p.cost_nanos
    from budgets as b
    inner join periods as p on p.name = b.name
)

select
    name as budget_name,
    period,
    period_start,
    case period
        when 'day' then period_start + interval 1 day
        else period_start + interval 1 month
    end::date as period_end,
    coalesce(nullif(scope, ''), 'all spend') as scope,
    limit_nanos,
    nanos_to_usd(limit_nanos) as limit_usd,
    sum(cost_nanos)::hugeint as spend_nanos,
    nanos_to_usd(sum(cost_nanos)) as spend_usd,
    (limit_nanos - sum(cost_nanos))::hugeint as remaining_nanos,
    case when limit_nanos > 0
        then round(100.0 * sum(cost_nanos) / limit_nanos, 1)
    end as used_pct,
    case
        when sum(cost_nanos) > limit_nanos then 'crossed'
        when sum(cost_nanos) >= 0.8 * limit_nanos then 'warning'
        else 'ok'
    end as status
from spend
group by name, period, period_start, scope, limit_nanos
