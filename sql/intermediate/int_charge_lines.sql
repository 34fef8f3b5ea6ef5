-- every billed nano as one row: a batch's pricing lines, plus one adjustment row where the
-- lines do not add up to billing.cost_nanos (or there are none). Sums exactly to the bill.
-- Lines so far off that the rest of the bill would not fit a BIGINT (nanos summing past
-- 2^63) are not itemised: the whole bill is one adjustment (billing_reconciliation flags
-- the lines).
-- Only money the gateway billed (stg_batches.is_billed): a batch without billing is not
-- charged yet, and money priced but not billed (billing.billed = false) is not spend
-- (it shows in spend_unbilled). Dated by the charge date (charged_at) and the usage date
-- (used_at) of stg_batches; the FOCUS books (charge_ledger) are written from this view.
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
        charged_at,
        used_at
    from stg_batches
    where is_billed
),

line_totals as (
    select
        batch_id,
        coalesce(sum(line_nanos), 0)::hugeint as line_nanos
    from stg_pricing_lines
    group by batch_id
),

checked as (
    select
        b.batch_id,
        coalesce(t.line_nanos, 0) as line_nanos,
        abs(b.cost_nanos::hugeint - coalesce(t.line_nanos, 0)) <= 9223372036854775807
            as itemised
    from billed as b
    left join line_totals as t on t.batch_id = b.batch_id
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
    inner join checked as c on c.batch_id = b.batch_id and c.itemised
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
        (b.cost_nanos - case when c.itemised then c.line_nanos else 0 end)::bigint
            as charge_nanos
    from billed as b
    inner join checked as c on c.batch_id = b.batch_id
    where b.cost_nanos <> case when c.itemised then c.line_nanos else 0 end
)

select * from usage_lines
union all by name
select * from adjustments
