-- every pricing line of a billed batch, checked by arithmetic and against the user's price
-- list (config prices), with the differences in nanos.
--   expected_line_nanos = quantity × unit_price_usd × 1e9 / unit_size, computed exactly in
--     integers and rounded half up to the nano; a line whose line_nanos differs by more
--     than 1 nano is 'arithmetic_mismatch' (billable_units must also be quantity /
--     unit_size to 1e-9);
--   'unpriced': a line with quantity but no or a zero unit price on a billed batch;
--   list_line_nanos: the same arithmetic with the price list's unit price (the most
--     specific entry for provider, model, dimension, plan and unit size in force on the
--     charge date); 'list_mismatch' when it differs by more than 1 nano, 'not_in_list'
--     when a price list is set but has no entry for the line.
create or replace view price_checks as
with lines as (
    select
        l.batch_id,
        l.line_index,
        (b.charged_at at time zone 'UTC')::date as day,
        b.provider,
        coalesce(b.metadata ->> '$.model', 'unknown') as model,
        l.dimension,
        l.pricing_plan,
        l.quantity,
        l.unit_size,
        l.billable_units,
        l.unit_price_usd,
        l.line_nanos,
        case
            when l.quantity = floor(l.quantity) and l.unit_size = floor(l.unit_size)
                and l.unit_size > 0
                then l.quantity::hugeint
        end as quantity_int,
        case
            when l.unit_size = floor(l.unit_size) and l.unit_size > 0 then l.unit_size::hugeint
        end as unit_size_int,
        (l.unit_price_usd * 1000000000)::hugeint as unit_price_nanos
    from stg_pricing_lines as l
    inner join stg_batches as b on b.batch_id = l.batch_id
    where b.cost_nanos is not null and l.line_shape = 'priced'
),

listed as (
    select
        l.batch_id,
        l.line_index,
        p.unit_price_nanos as list_unit_price_nanos,
        row_number() over (
            partition by l.batch_id, l.line_index
            order by (p.model is not null) desc, (p.pricing_plan is not null) desc,
                (p.unit_size is not null) desc, p.effective_from desc nulls last
        ) as rn
    from lines as l
    inner join price_list as p
        on p.provider = l.provider
        and p.dimension = l.dimension
        and (p.model is null or p.model = l.model)
        and (p.pricing_plan is null or p.pricing_plan = l.pricing_plan)
        and (p.unit_size is null or p.unit_size = l.unit_size_int)
        and (p.effective_from is null or l.day >= p.effective_from)
        and (p.effective_to is null or l.day < p.effective_to)
),

checked as (
    select
        l.*,
        (l.quantity_int * l.unit_price_nanos * 2 + l.unit_size_int)
            // (2 * l.unit_size_int) as expected_line_nanos,
        p.list_unit_price_nanos,
        (l.quantity_int * p.list_unit_price_nanos * 2 + l.unit_size_int)
            // (2 * l.unit_size_int) as list_line_nanos,
        exists (select 1 from price_list) as has_price_list
    from lines as l
    left join listed as p
        on p.batch_id = l.batch_id and p.line_index = l.line_index and p.rn = 1
)

select
    batch_id,
    line_index,
    day,
    provider,
    model,
    dimension,
    pricing_plan,
    quantity,
    unit_size,
    billable_units,
    unit_price_usd,
    line_nanos,
    expected_line_nanos,
    (line_nanos - expected_line_nanos)::hugeint as arithmetic_diff_nanos,
    nanos_to_usd(list_unit_price_nanos) as list_unit_price_usd,
    list_line_nanos,
    (line_nanos - list_line_nanos)::hugeint as list_diff_nanos,
    case
        when coalesce(unit_price_usd, 0) = 0 and coalesce(quantity, 0) > 0 then 'unpriced'
        when expected_line_nanos is null
            or abs(line_nanos - expected_line_nanos) > 1
            or abs(billable_units - quantity / unit_size) > 1e-9
            then 'arithmetic_mismatch'
        when has_price_list and list_unit_price_nanos is null then 'not_in_list'
        when list_line_nanos is not null and abs(line_nanos - list_line_nanos) > 1
            then 'list_mismatch'
        else 'ok'
    end as status
from checked
