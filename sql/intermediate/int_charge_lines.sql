-- every billed nano as one row: a batch's pricing lines, plus one adjustment row where the
-- lines do not add up to billing.cost_nanos (or there are none). Sums exactly to the bill.
-- Batches without billing are not charged yet and have no rows here.
create or replace view int_charge_lines as
with billed as (
    select
        batch_id,
        provider,
        session_id,
        endpoint,
        metadata,
        metadata ->> '$.model' as model,
        billing_reason,
        charged,
        cost_nanos,
        charged_at
    from stg_batches
    where cost_nanos is not null
),

line_totals as (
    select
        batch_id,
        coalesce(sum(line_nanos), 0)::hugeint as line_nanos
    from stg_pricing_lines
    group by batch_id
),

usage_lines as (
    select
        b.*,
        l.line_index,
        'usage' as charge_kind,
        l.dimension,
        l.quantity,
        l.billable_units,
        l.unit_size,
        l.unit_price_usd,
        l.pricing_plan,
        l.service_tier,
        coalesce(l.line_nanos, 0) as charge_nanos
    from billed as b
    inner join stg_pricing_lines as l on l.batch_id = b.batch_id
),

adjustments as (
    select
        b.*,
        null::integer as line_index,
        'adjustment' as charge_kind,
        null::varchar as dimension,
        null::double as quantity,
        null::double as billable_units,
        null::double as unit_size,
        null::decimal(38, 9) as unit_price_usd,
        null::varchar as pricing_plan,
        null::varchar as service_tier,
        (b.cost_nanos - coalesce(t.line_nanos, 0))::bigint as charge_nanos
    from billed as b
    left join line_totals as t on t.batch_id = b.batch_id
    where b.cost_nanos <> coalesce(t.line_nanos, 0)
)

select * from usage_lines
union all by name
select * from adjustments
