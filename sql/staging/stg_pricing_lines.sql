-- staging: one row per pricing line, renamed and cast.
create or replace view stg_pricing_lines as
select
    batch_id,
    line_index,
    line_shape,
    dimension,
    quantity,
    billable_units,
    unit_size,
    unit_price_usd,
    line_cost_usd,
    line_nanos,
    pricing_plan,
    service_tier,
    endpoint
from pricing_lines
