-- spend per UTC day, provider, model and pricing dimension, as billed (by charge date;
-- a restatement's difference per dimension on the day it was restated).
-- model comes from the batch's metadata.model where present (pricing lines carry no
-- model: spend_by_model attributes models from the request rows); the 'adjustment'
-- dimension holds what the lines do not explain.
create or replace view spend_by_dimension as
with lines as (
    select
        (charged_at at time zone 'UTC')::date as day,
        provider,
        coalesce(model, 'unknown') as model,
        coalesce(dimension, 'adjustment') as dimension,
        batch_id,
        quantity,
        charge_nanos
    from int_billed_charges
)

select
    day,
    provider,
    model,
    dimension,
    count(distinct batch_id) as batches,
    count(*) as lines,
    sum(quantity) as quantity,
    sum(charge_nanos)::hugeint as cost_nanos,
    nanos_to_usd(sum(charge_nanos)) as cost_usd
from lines
group by day, provider, model, dimension
order by day, provider, model, dimension
