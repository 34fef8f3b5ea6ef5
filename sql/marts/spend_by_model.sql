-- spend per UTC day, provider and model. The model is the one the provider reported on
-- each request (request rows); batches without request rows count under metadata.model
-- or 'unknown', and what request rows do not explain under 'unattributed'
-- (attribution says which). requests counts request rows where attribution = 'requests',
-- else the batches' request_counts.total. Sums exactly to the bill.
create or replace view spend_by_model as
with charges as (
    select
        (charged_at at time zone 'UTC')::date as day,
        provider,
        model,
        attribution,
        batch_id,
        requests,
        input_tokens,
        output_tokens,
        cost_nanos
    from int_model_charges
)

select
    day,
    provider,
    model,
    attribution,
    count(distinct batch_id) as batches,
    sum(requests)::hugeint as requests,
    sum(input_tokens)::hugeint as input_tokens,
    sum(output_tokens)::hugeint as output_tokens,
    sum(cost_nanos)::hugeint as cost_nanos,
    nanos_to_usd(sum(cost_nanos)) as cost_usd
from charges
group by day, provider, model, attribution
order by day, provider, model, attribution
