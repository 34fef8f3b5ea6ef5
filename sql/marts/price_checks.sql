-- every pricing line of a billed batch, checked the way the gateway's pricing engine
-- computes it, and against the user's price list (config prices), differences in nanos.
-- The engine prices each REQUEST: billable units = (quantity - included quantity) /
-- unit_size, nanos = round(units × unit price); a batch line sums those.
--   included_quantity = quantity - billable_units × unit_size where positive (a price
--     rule's included quantity, recognised, not an error);
--   expected_line_nanos = (quantity - included_quantity) × unit_price_usd × 1e9 /
--     unit_size, exact in integers, rounded half up to the nano;
--   tolerance_nanos = half a nano per request, rounded up (requests: the batch's
--     completed request rows, else request_counts.completed, else 1): each request's
--     rounding may differ by up to half a nano;
--   status: 'not_checkable' a fallback line (a total only: batch_requests), its amount
--     shown; 'unpriced' quantity with no or a zero unit price; 'units_mismatch' more
--     billable units than quantity / unit_size; 'arithmetic_mismatch' line_nanos off by
--     more than the tolerance; 'not_in_list' / 'list_mismatch' against the price list
--     (the most specific entry for provider, model, dimension, plan and unit size in
--     force on the charge date; same rounding tolerance). Where the price list has no
--     entry for the line, the gateway's catalogue of the line's charge time
--     (int_catalogue_validity) decides: 'catalogue_mismatch' the catalogue prices the
--     line's provider, model and meter but none at the line's price,
--     'not_in_catalogue' it has no price for them; else 'ok'.
--   catalogue_status: 'match' (catalogue_entry names the entry), 'price_differs'
--     (catalogue_prices_in_force lists them), 'not_in_catalogue', or 'no_snapshot'
--     when no catalogue snapshot was taken at or before the charge (nothing to check by).
create or replace view price_checks as
with request_rows as (
    select batch_id, count(*) filter (where request_status = 'completed') as completed
    from stg_batch_requests
    group by batch_id
),

lines as (
    select
        l.batch_id,
        l.line_index,
        l.line_shape,
        (b.charged_at at time zone 'UTC')::date as day,
        b.charged_at,
        b.provider,
        coalesce(b.metadata ->> '$.model', 'unknown') as model,
        l.dimension,
        l.pricing_plan,
        l.quantity,
        l.unit_size,
        l.billable_units,
        l.unit_price_usd,
        l.line_nanos,
        greatest(coalesce(nullif(r.completed, 0), b.request_counts_completed, 1), 1)::hugeint
            as requests,
        case
            when l.quantity = floor(l.quantity) and l.unit_size = floor(l.unit_size)
                and l.unit_size > 0 and l.billable_units is not null
                and l.quantity between 0 and 1e15 and l.unit_size < 1e15
                and abs(l.billable_units * l.unit_size) < 1e15
                then greatest(
                    round(l.quantity - l.billable_units * l.unit_size), 0
                )::hugeint
        end as included_int,
        -- checked in exact integers where the values are plausible (a quantity or unit
        -- size below 1e15, a unit price below $1e12: no product overflows); any other
        -- line has no expected_line_nanos and is an arithmetic_mismatch
        case
            when l.quantity = floor(l.quantity) and l.unit_size = floor(l.unit_size)
                and l.unit_size > 0 and l.quantity between 0 and 1e15 and l.unit_size < 1e15
                then l.quantity::hugeint
        end as quantity_int,
        case
            when l.unit_size = floor(l.unit_size) and l.unit_size > 0 and l.unit_size < 1e15
                then l.unit_size::hugeint
        end as unit_size_int,
        case
            when abs(l.unit_price_usd) < 1000000000000
                then (l.unit_price_usd * 1000000000)::hugeint
        end as unit_price_nanos
    from stg_pricing_lines as l
    inner join stg_batches as b on b.batch_id = l.batch_id
    left join request_rows as r on r.batch_id = l.batch_id
    where b.is_billed
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

catalogue as (
    -- the gateway's catalogue entries in force at the line's charge time (the dated
    -- snapshots of GET /v1/pricing/models) for its provider, model and meter; the
    -- catalogue has no tier label, so the line matches one of them by price, or none.
    -- Prices compare per unit across unit sizes, exactly: price x other unit size.
    select
        l.batch_id,
        l.line_index,
        count(*) as entries,
        arg_min(
            coalesce(c.endpoint, '') || ': ' || c.price_per_unit || ' per '
                || c.unit_size || ' (in force from ' || strftime(c.valid_from, '%Y-%m-%d')
                || ')',
            c.valid_from
        ) filter (where m.same_price) as matched_entry,
        any_value(c.unit_price) filter (where m.same_price) as matched_unit_price,
        string_agg(
            distinct c.price_per_unit || ' per ' || c.unit_size, ', '
            order by c.price_per_unit || ' per ' || c.unit_size
        ) as prices_in_force
    from lines as l
    inner join int_catalogue_validity as c
        on c.provider = l.provider
        and c.model = l.model
        and c.meter = l.dimension
        and c.unit_price is not null
        and c.valid_from <= l.charged_at
        and (c.valid_to is null or l.charged_at < c.valid_to)
    cross join lateral (
        select case
            when l.unit_price_nanos is null then false
            when c.unit_size = l.unit_size_int
                then c.unit_price_attousd = l.unit_price_nanos * 1000000000
            when c.unit_size < 1000000000 and l.unit_size_int < 1000000000
                and abs(c.unit_price_attousd) < 1000000000000000000000000000
                then c.unit_price_attousd * l.unit_size_int
                    = l.unit_price_nanos * 1000000000 * c.unit_size
            else false
        end as same_price
    ) as m
    group by l.batch_id, l.line_index
),

checked as (
    select
        l.*,
        l.quantity_int - coalesce(l.included_int, 0) as billable_int,
        ((l.quantity_int - coalesce(l.included_int, 0)) * l.unit_price_nanos * 2
            + l.unit_size_int) // (2 * l.unit_size_int) as expected_line_nanos,
        p.list_unit_price_nanos,
        ((l.quantity_int - coalesce(l.included_int, 0)) * p.list_unit_price_nanos * 2
            + l.unit_size_int) // (2 * l.unit_size_int) as list_line_nanos,
        (l.requests + 1) // 2 as tolerance_nanos,
        exists (select 1 from price_list) as has_price_list,
        case
            when not exists (
                select 1 from catalogue_snapshots as s where s.taken_at <= l.charged_at
            ) then 'no_snapshot'
            when c.matched_entry is not null then 'match'
            when c.entries > 0 then 'price_differs'
            else 'not_in_catalogue'
        end as catalogue_status,
        c.matched_entry as catalogue_entry,
        c.matched_unit_price as catalogue_unit_price,
        c.prices_in_force as catalogue_prices_in_force
    from lines as l
    left join listed as p
        on p.batch_id = l.batch_id and p.line_index = l.line_index and p.rn = 1
    left join catalogue as c
        on c.batch_id = l.batch_id and c.line_index = l.line_index
)

select
    batch_id,
    line_index,
    line_shape,
    day,
    provider,
    model,
    dimension,
    pricing_plan,
    quantity,
    nullif(included_int, 0) as included_quantity,
    unit_size,
    billable_units,
    unit_price_usd,
    line_nanos,
    requests,
    tolerance_nanos,
    expected_line_nanos,
    (line_nanos - expected_line_nanos)::hugeint as arithmetic_diff_nanos,
    nanos_to_usd(list_unit_price_nanos) as list_unit_price_usd,
    list_line_nanos,
    (line_nanos - list_line_nanos)::hugeint as list_diff_nanos,
    catalogue_status,
    catalogue_entry,
    catalogue_unit_price as catalogue_unit_price_usd,
    catalogue_prices_in_force,
    case
        when line_shape = 'fallback' then 'not_checkable'
        when coalesce(unit_price_usd, 0) = 0 and coalesce(quantity, 0) > 0 then 'unpriced'
        when billable_units < 0
            or billable_units - quantity / unit_size > 1e-9 * greatest(billable_units, 1)
            then 'units_mismatch'
        when expected_line_nanos is null
            or abs(line_nanos - expected_line_nanos) > tolerance_nanos
            then 'arithmetic_mismatch'
        when list_line_nanos is not null and abs(line_nanos - list_line_nanos) > tolerance_nanos
            then 'list_mismatch'
        when list_line_nanos is not null then 'ok'
        when catalogue_status = 'price_differs' then 'catalogue_mismatch'
        when catalogue_status = 'not_in_catalogue' then 'not_in_catalogue'
        when has_price_list and catalogue_status = 'no_snapshot' then 'not_in_list'
        else 'ok'
    end as status
from checked
