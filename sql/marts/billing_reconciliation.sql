-- one row per failed reconciliation check; an empty view means the bill adds up:
-- pricing lines, breakdown, usage and request rows (the gateway writes each request's
-- cost; their sum is the bill) agree with billing.cost_nanos, and the FOCUS books sum to
-- each batch's billed cost. Money priced but not billed is not a mismatch: it is listed
-- in spend_unbilled.
create or replace view billing_reconciliation as
with line_totals as (
    select
        batch_id,
        count(*) as lines,
        count(line_nanos) as lines_with_nanos,
        sum(line_nanos) as line_nanos,
        sum(line_cost_usd) as line_cost_usd
    from stg_pricing_lines
    group by batch_id
),

request_totals as (
    select
        batch_id,
        count(*) as requests,
        coalesce(sum(cost_nanos), 0)::hugeint as cost_nanos
    from stg_batch_requests
    group by batch_id
),

ledger_totals as (
    select
        batch_id,
        sum(charge_nanos)::hugeint as charge_nanos
    from charge_ledger
    group by batch_id
),

checks as (
    select
        b.batch_id,
        'lines_vs_cost' as check_name,
        b.cost_nanos::hugeint as expected_nanos,
        l.line_nanos::hugeint as actual_nanos,
        'sum(pricing_lines.line_nanos) <> billing.cost_nanos' as detail
    from stg_batches as b
    inner join line_totals as l on l.batch_id = b.batch_id
    where b.cost_nanos is not null
      and l.lines = l.lines_with_nanos
      and l.line_nanos <> b.cost_nanos

    union all
    select
        b.batch_id,
        'breakdown_vs_cost',
        b.cost_nanos,
        b.breakdown_total_nanos,
        'billing.pricing_breakdown.total_nanos <> billing.cost_nanos'
    from stg_batches as b
    where b.breakdown_total_nanos <> b.cost_nanos

    union all
    select
        b.batch_id,
        'breakdown_usd_vs_nanos',
        b.breakdown_total_nanos,
        (b.breakdown_total_usd * 1000000000)::hugeint,
        'pricing_breakdown.total_usd_str <> total_nanos / 1e9'
    from stg_batches as b
    where b.breakdown_total_usd * 1000000000 <> b.breakdown_total_nanos

    union all
    select
        l.batch_id,
        'line_usd_vs_nanos',
        l.line_nanos,
        (l.line_cost_usd * 1000000000)::hugeint,
        'sum(line_cost_usd) <> sum(line_nanos) / 1e9'
    from line_totals as l
    where l.line_cost_usd * 1000000000 <> l.line_nanos

    union all
    select
        b.batch_id,
        'api_usd_vs_nanos',
        b.cost_nanos,
        round(b.api_cost_usd * 1e9)::hugeint,
        'billing.cost_usd differs from cost_nanos / 1e9 by more than 1e-6 USD'
    from stg_batches as b
    where abs(b.api_cost_usd - b.cost_nanos / 1e9) > 1e-6

    union all
    select
        b.batch_id,
        'charged_without_cost',
        null,
        null,
        'billing.charged is true but there is no cost_nanos'
    from stg_batches as b
    where b.charged and b.cost_nanos is null

    union all
    select
        b.batch_id,
        'requests_vs_cost',
        b.cost_nanos::hugeint,
        r.cost_nanos,
        'sum(request rows cost_nanos) <> billing.cost_nanos (' || r.requests || ' rows)'
    from stg_batches as b
    inner join request_totals as r on r.batch_id = b.batch_id
    where b.is_billed and b.is_final and r.cost_nanos <> b.cost_nanos

    union all
    select
        b.batch_id,
        'ledger_vs_bill',
        coalesce(b.billed_nanos, 0)::hugeint,
        coalesce(l.charge_nanos, 0),
        'the FOCUS books (charge_ledger) do not sum to the billed cost'
    from stg_batches as b
    left join ledger_totals as l on l.batch_id = b.batch_id
    where coalesce(l.charge_nanos, 0) <> coalesce(b.billed_nanos, 0)

    union all
    select
        b.batch_id,
        'usage_vs_cost',
        b.cost_nanos,
        b.usage_cost_nanos,
        'usage.cost_nanos <> billing.cost_nanos'
    from stg_batches as b
    where b.usage_cost_nanos <> b.cost_nanos
      and coalesce(upper(b.usage_currency), 'USD') = 'USD'

    union all
    select
        b.batch_id,
        'non_usd_currency',
        null,
        b.usage_cost_nanos,
        'usage.currency is ' || b.usage_currency || ': not added to any USD total'
    from stg_batches as b
    where upper(b.usage_currency) <> 'USD'
)

select * from checks
order by batch_id, check_name
